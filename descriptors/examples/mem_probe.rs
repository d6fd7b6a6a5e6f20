//! Where the registry's memory goes: resident memory added by the pool
//! alone, then by a whole `Registry::put`, for the `register_large` set.
//! `cargo run --release -p descriptors --example mem_probe -- SET.pb`
//! (write the set with `register_large`'s generator first).

use descriptors::Registry;
use prost_reflect::DescriptorPool;

#[path = "common/rss.rs"]
mod rss;
use rss::rss_kib;

fn main() {
    let path = std::env::args().nth(1).expect("set file");
    let bytes = std::fs::read(&path).expect("read");
    let mode = std::env::args().nth(2).unwrap_or_default();
    let before = rss_kib();
    if mode == "pool" {
        let mut pool =
            DescriptorPool::decode(descriptors::BUNDLED_DESCRIPTOR_SET).expect("bundled");
        pool.decode_file_descriptor_set(bytes.as_slice())
            .expect("decodes");
        println!("pool only: {} KiB", rss_kib() - before);
        std::hint::black_box(&pool);
    } else {
        let registry = Registry::new();
        registry.put("large", &bytes).expect("registers");
        println!("registry put: {} KiB", rss_kib() - before);
        std::hint::black_box(&registry);
    }
}
