//! Live heap blocks by allocation size (`raw_rmcp --heap-profile`), to explain what a live
//! session costs: `GET /heap` lists, for every size with live blocks, how many there are.
//! `bench/run` reads it before and after opening its sessions; the difference, divided by
//! the number of sessions, is the heap profile of one session.
//!
//! The allocator forwards to the system allocator. With profiling off it costs one relaxed
//! load per call; on, a few atomic operations on a fixed table (it must not allocate).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

/// Distinct allocation sizes tracked; sizes past this many land in `OTHER_BYTES`.
const SLOTS: usize = 8192;

static ON: AtomicBool = AtomicBool::new(false);
/// Open addressing: slot `i` holds size `SIZES[i]` (0: free) with `LIVE[i]` live blocks.
static SIZES: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LIVE: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
static OTHER_BYTES: AtomicIsize = AtomicIsize::new(0);

/// The global allocator of `raw_rmcp`.
pub struct Counting;

/// Starts counting. Blocks freed later that were allocated before show up as negative
/// counts; only differences between two reports mean anything.
pub fn start() {
    ON.store(true, Relaxed);
}

fn slot(size: usize) -> Option<usize> {
    // Fibonacci hashing spreads the (mostly multiple-of-8) sizes over the table.
    let mut i = (size.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) % SLOTS;
    for _ in 0..SLOTS {
        match SIZES[i].compare_exchange(0, size, Relaxed, Relaxed) {
            Ok(_) => return Some(i),
            Err(held) if held == size => return Some(i),
            Err(_) => i = (i + 1) % SLOTS,
        }
    }
    None
}

fn record(size: usize, delta: isize) {
    if size == 0 {
        return;
    }
    match slot(size) {
        Some(i) => {
            LIVE[i].fetch_add(delta, Relaxed);
        }
        None => {
            OTHER_BYTES.fetch_add(delta * size as isize, Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only touches
// atomics in statics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && ON.load(Relaxed) {
            record(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && ON.load(Relaxed) {
            record(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ON.load(Relaxed) {
            record(layout.size(), -1);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && ON.load(Relaxed) {
            record(layout.size(), -1);
            record(new_size, 1);
        }
        p
    }
}

/// What `GET /heap` answers: `sizes` as `[size, live blocks]` pairs (non-zero counts
/// only), `other_bytes` for sizes that found no slot, and the sizes of the rmcp message
/// types whose channels a session holds, to name the blocks by.
pub fn report() -> serde_json::Value {
    let sizes: Vec<[i64; 2]> = (0..SLOTS)
        .filter_map(|i| {
            let size = SIZES[i].load(Relaxed);
            let live = LIVE[i].load(Relaxed);
            (size != 0 && live != 0).then_some([size as i64, live as i64])
        })
        .collect();
    serde_json::json!({
        "sizes": sizes,
        "other_bytes": OTHER_BYTES.load(Relaxed),
        "types": {
            "ClientJsonRpcMessage": size_of::<rmcp::model::ClientJsonRpcMessage>(),
            "ServerJsonRpcMessage": size_of::<rmcp::model::ServerJsonRpcMessage>(),
        },
    })
}
