//! Any bytes into the header parser: it must return Ok or Err, never panic, and a header it
//! accepts must re-encode to the same bytes and have a computable file size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamsgd::dataset::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data) {
        assert_eq!(&h.encode()[..], &data[..64]);
        assert!(h.file_size().is_some());
    }
});
