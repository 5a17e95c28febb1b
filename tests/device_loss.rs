//! Losing the GPU device natively (smol135 on lavapipe in CI): wgpu's `Device::destroy()` on the engine's own device
//! in the middle of a generation, a real loss as a driver reset gives. The running generation ends with
//! `gpu.device_lost`, later generations fail at once with the same code, and the model loaded again on a new device
//! gives the same greedy tokens as before the loss. (The server's side: `tests/hardening.rs`; the browser's:
//! `tests/browser/device-loss.test.mjs`.)

mod common;

use std::time::{Duration, Instant};
use webr1::chat::Message;
use webr1::engine::{Engine, EngineOptions, Event, Input, Request, Sampling};
use webr1::ErrorCode;

fn options() -> EngineOptions {
    EngineOptions { context_length: Some(256), ..EngineOptions::default() }
}

fn greedy(text: &str, max_tokens: usize) -> Request {
    let mut request = Request::new(Input::Messages(vec![Message::user(text)]));
    request.sampling = Sampling::greedy();
    request.max_tokens = Some(max_tokens);
    request
}

fn tokens(engine: &mut Engine, request: Request) -> Vec<u32> {
    pollster::block_on(async {
        let mut generation = engine.generate(request).unwrap();
        while let Some(event) = generation.next().await {
            if let Event::Done(finish) = event.unwrap() {
                return finish.token_ids;
            }
        }
        panic!("no finish")
    })
}

#[test]
fn a_destroyed_device_fails_the_generation_and_later_calls_and_a_reload_gives_the_same_tokens() {
    let Some(mut engine) = pollster::block_on(common::engine("smol135", options())) else { return };
    let before = tokens(&mut engine, greedy("Name three colours.", 6));
    assert_eq!(before.len(), 6);

    let device = engine.gpu().device().clone();
    let (outcome, lost_in) = pollster::block_on(async {
        let mut generation = engine.generate(greedy("Count from 1 to 1000, separated by commas.", 200)).unwrap();
        let mut lost_at = None;
        let mut generated = 0;
        while let Some(event) = generation.next().await {
            match event {
                Ok(Event::Content(_) | Event::Reasoning(_)) => {
                    generated += 1;
                    if generated == 3 {
                        device.destroy();
                        lost_at = Some(Instant::now());
                    }
                }
                Ok(Event::Done(finish)) => return (Ok(finish), Duration::ZERO),
                Ok(Event::ToolCall(_)) => {}
                Err(e) => return (Err(e), lost_at.map_or(Duration::ZERO, |t| t.elapsed())),
            }
        }
        panic!("the generation ended without an event saying how")
    });
    let e = outcome.expect_err("a generation whose device was destroyed fails");
    assert_eq!(e.code, ErrorCode::GpuDeviceLost, "{e}");
    eprintln!("the generation ended with {e} {lost_in:.1?} after the device was destroyed");
    assert!(lost_in < Duration::from_secs(1), "the loss took {lost_in:?} to surface");

    let started = Instant::now();
    let again = engine.generate(greedy("Name three colours.", 6)).err().expect("later calls fail");
    assert_eq!(again.code, ErrorCode::GpuDeviceLost, "{again}");
    assert!(started.elapsed() < Duration::from_millis(100), "and fail fast: {:?}", started.elapsed());
    drop(engine);

    let Some(mut fresh) = pollster::block_on(common::engine("smol135", options())) else { return };
    assert_eq!(tokens(&mut fresh, greedy("Name three colours.", 6)), before, "the same greedy tokens after a reload");
}
