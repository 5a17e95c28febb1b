//! A [`ModelSource`] over a JS object, so that the I/O (fetch with Range requests, OPFS cache, `Blob` slices) stays in
//! the package's JS and the loading logic (headers, split parts, resuming, upload) in the engine.
//!
//! The JS side passes an object of this shape (see `pkg/src/source.js`):
//!
//! ```js
//! {
//!   name: "https://host/model-00001-of-00002.gguf",
//!   async open(part, name, offset) { return { reader: { read, cancel }, length } }, // length: number or null
//! }
//! ```
//!
//! `reader.read()` resolves to the next `Uint8Array`, or `null` at the end; it rejects with an `Error` whose `code` is
//! a webr1 code (`download.interrupted`, `download.failed`, `aborted`, ...).

use super::errors::from_js;
use crate::engine::{ByteStream, ModelSource, Opened};
use crate::{err, Result};
use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// The JS model source described in the module docs.
    pub type JsModelSource;

    #[wasm_bindgen(method, getter)]
    fn name(this: &JsModelSource) -> String;

    #[wasm_bindgen(method, catch)]
    fn open(this: &JsModelSource, part: u32, name: &str, offset: f64) -> std::result::Result<Promise, JsValue>;

    type JsByteReader;

    #[wasm_bindgen(method, catch)]
    fn read(this: &JsByteReader) -> std::result::Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn cancel(this: &JsByteReader) -> std::result::Result<JsValue, JsValue>;
}

/// The source and its first file's name, read once.
pub struct WebSource {
    js: JsModelSource,
    name: String,
}

impl WebSource {
    pub fn new(js: JsModelSource) -> WebSource {
        let name = js.name();
        WebSource { js, name }
    }
}

/// One open JS reader; dropping it cancels the transfer.
pub struct WebStream {
    reader: JsByteReader,
    done: bool,
}

impl Drop for WebStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.reader.cancel();
        }
    }
}

impl ByteStream for WebStream {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let promise = self.reader.read().map_err(|e| from_js(&e, "reading the model"))?;
        let value = JsFuture::from(promise).await.map_err(|e| from_js(&e, "reading the model"))?;
        if value.is_null() || value.is_undefined() {
            self.done = true;
            return Ok(None);
        }
        let bytes: Uint8Array =
            value.dyn_into().map_err(|_| err!(Usage, "the model source's read() gave something other than bytes"))?;
        Ok(Some(bytes.to_vec()))
    }
}

impl ModelSource for WebSource {
    type Stream = WebStream;

    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&mut self, part: usize, name: &str, offset: u64) -> Result<Opened<WebStream>> {
        let what = format!("opening {name}");
        let promise = self.js.open(part as u32, name, offset as f64).map_err(|e| from_js(&e, &what))?;
        let opened = JsFuture::from(promise).await.map_err(|e| from_js(&e, &what))?;
        let reader = Reflect::get(&opened, &"reader".into()).map_err(|e| from_js(&e, &what))?;
        if !reader.is_object() {
            return Err(err!(Usage, "the model source's open() gave no reader"));
        }
        let length = Reflect::get(&opened, &"length".into()).ok().and_then(|v| v.as_f64());
        let file_len = length.filter(|l| l.is_finite() && *l >= 0.0).map(|l| l as u64);
        Ok(Opened { stream: WebStream { reader: reader.unchecked_into(), done: false }, file_len })
    }
}
