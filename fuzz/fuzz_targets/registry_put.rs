//! Descriptor-set upload (`Registry::put`): arbitrary bytes as a
//! FileDescriptorSet, decoded, validated, its google.api.http rules compiled,
//! registered next to the hostile schema (so the conflict checks run too);
//! never a panic or a stack overflow.
#![no_main]

use std::sync::OnceLock;

use descriptors::Registry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One registry for the run: building the bundled pool costs ~25 ms.
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| {
        let registry = Registry::new();
        registry
            .put("hostile", gateway_fuzz::hostile_set())
            .expect("the hostile schema registers");
        registry
    });
    if registry.put("fuzz", data).is_ok() {
        assert!(registry.snapshot().set_bytes("fuzz").is_some());
        registry
            .remove("fuzz")
            .expect("a set just put can be removed");
    }
});
