//! libFuzzer target: the movement decoder and validator on arbitrary bytes. A violated
//! property panics, which libFuzzer reports as a crash with the input saved.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = omnistock_fuzz::check(data) {
        panic!("{e}");
    }
});
