//! Uploaded model files, through the upload path itself: protobuf decoding, our checks, tract
//! compilation (symbolic and batch-1 plans) and the trial runs on zeros. Seeds:
//! fixtures/models/*.onnx.
//!
//! The property is the node's: a file gives a model or an error, never an escaping panic. The
//! upload path catches panics inside tract (the trial runs exist to provoke them), so by default
//! this target silences the panic hook and only a panic that escapes `describe` aborts (the
//! libFuzzer wrapper aborts on those). `PIPE_FUZZ_STRICT=1` keeps libFuzzer's hook, which
//! aborts on every panic, caught or not: that hunts tract panics worth refusing up front.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipe_inference::{UploadOptions, describe};
use std::sync::Once;

fuzz_target!(|data: &[u8]| {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        if std::env::var_os("PIPE_FUZZ_STRICT").is_none() {
            std::panic::set_hook(Box::new(|_| {}));
        }
    });
    let _ = describe(data, &UploadOptions::default());
});
