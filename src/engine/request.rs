//! The one check of a generation request, shared by every shell (the CLI's `run` and `chat`, the server, the browser
//! package): sampling values in range, a token limit of at least one, stop strings that can match. The server's JSON
//! parser and the package's JS check the shape of what they are given; the values are judged here, so that
//! `run --temperature -1` and `{"temperature": -1}` are refused alike. Also the rule for a requested context length.

use super::generate::{Request, Sampling};
use crate::{err, Result};

impl Sampling {
    /// `temperature` in 0..=2, `top_p` in (0, 1] (as OpenAI's API documents them), `min_p` in 0..=1; all finite.
    pub fn validate(&self) -> Result<()> {
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("top_p", self.top_p, 0.0, 1.0)?;
        if self.top_p == 0.0 {
            return Err(err!(Usage, "top_p must be greater than 0 (1 keeps every token)"));
        }
        in_range("min_p", self.min_p, 0.0, 1.0)
    }
}

impl Request {
    /// Checks the request's values before any work is done: a `usage` error naming the value and its range.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        if self.max_tokens == Some(0) {
            return Err(err!(Usage, "max_tokens must be at least 1 (leave it out for no limit but the context)"));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(err!(Usage, "a stop string must not be empty"));
        }
        Ok(())
    }
}

fn in_range(name: &str, value: f32, lo: f32, hi: f32) -> Result<()> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(err!(Usage, "{name} must be between {lo} and {hi}, not {value}"))
    }
}

/// A prompt of `prompt_tokens` fits a context of `ctx` tokens with room for one generated token; otherwise a
/// `context.full` error with both numbers.
pub fn check_prompt_fits(prompt_tokens: usize, ctx: usize) -> Result<()> {
    if prompt_tokens < ctx {
        return Ok(());
    }
    Err(err!(
        ContextFull,
        "the prompt is {prompt_tokens} tokens and the context holds {ctx}: shorten the prompt to at most {} tokens or \
         allocate a larger context",
        ctx.saturating_sub(1)
    ))
}

/// The context to allocate for a requested length: at least one token, never more than the model's own context
/// (`model_max`, from its metadata). Without a request, the model's own up to `default_cap`.
pub fn context_length(requested: Option<usize>, model_max: usize, default_cap: usize) -> Result<usize> {
    match requested {
        None => Ok(default_cap.min(model_max)),
        Some(0) => Err(err!(Usage, "a context of 0 tokens holds nothing: ask for 1 to {model_max} tokens")),
        Some(n) if n > model_max => Err(err!(
            Usage,
            "a context of {n} tokens is more than this model's own context of {model_max} tokens: ask for 1 to \
             {model_max}"
        )),
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Input;

    fn request(sampling: Sampling) -> Request {
        Request { sampling, ..Request::new(Input::Tokens { ids: vec![1], starts_in_reasoning: false }) }
    }

    #[test]
    fn sampling_values_outside_their_ranges_are_usage_errors() {
        let base = Sampling::default();
        let bad = [
            Sampling { temperature: -1.0, ..base },
            Sampling { temperature: f32::NAN, ..base },
            Sampling { temperature: f32::INFINITY, ..base },
            Sampling { temperature: 2.5, ..base },
            Sampling { top_p: 7.0, ..base },
            Sampling { top_p: 0.0, ..base },
            Sampling { top_p: -0.1, ..base },
            Sampling { min_p: 5.0, ..base },
            Sampling { min_p: f32::NAN, ..base },
        ];
        for s in bad {
            let e = request(s).validate().unwrap_err();
            assert_eq!(e.code(), "usage", "{s:?}");
        }
        for s in [base, Sampling::greedy(), Sampling { temperature: 2.0, top_p: 1.0, min_p: 1.0, ..base }] {
            request(s).validate().unwrap();
        }
    }

    #[test]
    fn max_tokens_zero_and_empty_stops_are_refused() {
        let mut r = request(Sampling::default());
        r.max_tokens = Some(0);
        assert!(r.validate().unwrap_err().message.contains("max_tokens"));
        r.max_tokens = Some(1);
        r.validate().unwrap();
        r.stop = vec![String::new()];
        assert!(r.validate().unwrap_err().message.contains("stop"));
    }

    #[test]
    fn a_context_above_the_models_own_is_an_error_naming_both() {
        assert_eq!(context_length(None, 8192, 16384).unwrap(), 8192);
        assert_eq!(context_length(None, 32768, 16384).unwrap(), 16384);
        assert_eq!(context_length(Some(512), 8192, 16384).unwrap(), 512);
        assert_eq!(context_length(Some(8192), 8192, 16384).unwrap(), 8192);
        let e = context_length(Some(100_000_000), 8192, 16384).unwrap_err();
        assert!(e.message.contains("100000000") && e.message.contains("8192"), "{e}");
        assert!(context_length(Some(0), 8192, 16384).is_err());
    }
}
