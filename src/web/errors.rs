//! webr1 errors as JS `Error`s with a stable `code` property, and JS exceptions back as webr1 errors.

use crate::{Error, ErrorCode};
use js_sys::Reflect;
use wasm_bindgen::JsValue;

/// A JS `Error` with `message`, `code` (e.g. `gguf.bad_magic`) and `name` `"Webr1Error"`.
pub fn to_js(e: Error) -> JsValue {
    let error = js_sys::Error::new(&e.message);
    error.set_name("Webr1Error");
    let _ = Reflect::set(&error, &"code".into(), &e.code().into());
    error.into()
}

/// An exception thrown by JS code webr1 called: its `code` when it is a webr1 code, otherwise `download.failed` (the
/// JS side webr1 calls does I/O).
pub fn from_js(value: &JsValue, doing: &str) -> Error {
    let code = Reflect::get(value, &"code".into()).ok().and_then(|c| c.as_string());
    let code = code.and_then(|c| ErrorCode::ALL.iter().copied().find(|k| k.as_str() == c));
    let message = Reflect::get(value, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"));
    match code {
        Some(code) => Error::new(code, message),
        None => Error::new(ErrorCode::DownloadFailed, format!("{doing}: {message}")),
    }
}
