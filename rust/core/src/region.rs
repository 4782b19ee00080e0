//! The shared region: a header and `capacity` bucket entries of atomics in a
//! memory map. `Region::anonymous` keeps it in this process; `Region::open` maps
//! a file so that every process opening the same path shares the buckets, the
//! revoked flags and the key-set generation.
//!
//! Layout (native endian, every field an `AtomicU64`, one 64-byte cache line each):
//! header `{magic, version, capacity, generation, boot_id}`, then per entry
//! `{tag, tat, fingerprint, flags}`. `tag == 0` marks a free entry.
//!
//! Entries are owned either by names (`named`, open addressing, never freed) or
//! by the gateway's slots (`claim`, indexed by the store): a region serves one
//! style, since a slot claim would overwrite a named entry and vice versa.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::*};

use memmap2::MmapMut;

use crate::error::{Error, Result};

const MAGIC: u64 = u64::from_le_bytes(*b"AGRTRLIM");
const VERSION: u64 = 1;
const LINE: usize = 64;
const REVOKED: u64 = 1;

#[repr(C, align(64))]
struct Header {
    magic: AtomicU64,
    version: AtomicU64,
    capacity: AtomicU64,
    generation: AtomicU64,
    boot_id: AtomicU64,
}

/// One bucket: who owns it, its GCRA state and the quota that state is in.
#[repr(C, align(64))]
pub struct Entry {
    /// Owner: a slot key's tag or a hashed bucket name; 0 = free.
    pub(crate) tag: AtomicU64,
    /// Theoretical arrival time, in the time units of the quota (see `gcra`).
    pub(crate) tat: AtomicU64,
    /// `Quota::fingerprint` of the quota `tat` is expressed in; 0 = none yet.
    pub(crate) fingerprint: AtomicU64,
    /// Bit 0: revoked.
    flags: AtomicU64,
}

const _: () = assert!(size_of::<Header>() == LINE && size_of::<Entry>() == LINE);

impl Entry {
    /// Gives the entry to `tag` with a full bucket. The old owner is retired
    /// first (tag → 0), so a worker still holding the old tag sees a mismatch
    /// before the state is reset, and the new tag is published last (Release),
    /// so whoever sees it also sees the fresh state — a stale reader never sees
    /// a fresh bucket under the old tag.
    ///
    /// This is why slots of deleted keys can be reused safely: a reused slot gets
    /// a new tag, so a worker still holding the deleted key's record (same slot,
    /// old tag) fails `is_live` and refuses the key.
    fn claim(&self, tag: u64) {
        self.tag.store(0, Release);
        self.tat.store(0, Relaxed);
        self.fingerprint.store(0, Relaxed);
        self.flags.store(0, Relaxed);
        self.tag.store(tag, Release);
    }

    /// Sets the revoked bit if the entry still belongs to `tag`. The store must not
    /// reuse the slot while a revocation of its previous owner is still running
    /// (it reuses slots of keys already deleted, so this holds).
    fn revoke(&self, tag: u64) -> bool {
        if self.tag.load(Acquire) != tag {
            return false;
        }
        self.flags.fetch_or(REVOKED, AcqRel);
        true
    }

    fn is_live(&self, tag: u64) -> bool {
        self.tag.load(Acquire) == tag && self.flags.load(Acquire) & REVOKED == 0
    }
}

pub struct Region {
    /// Keeps the mapping alive; all access goes through `base` as atomics.
    _map: MmapMut,
    base: *const u8,
    capacity: u32,
}

// SAFETY: `base` is the only field that is not `Send`. It points into the mapping
// owned by `_map`, which moves with the `Region` (a move does not move the mapped
// pages, so `base` stays valid) and is unmapped only when the `Region` is dropped.
unsafe impl Send for Region {}
// SAFETY: through `&Region` the mapping is reached only as `&Header` and `&[Entry]`,
// whose fields are all `AtomicU64`: concurrent use from any number of threads (and
// processes) is a set of atomic operations, never a data race. No method writes
// through `base` except by those atomics.
unsafe impl Sync for Region {}

impl Region {
    fn size(capacity: u32) -> usize {
        LINE * (1 + capacity as usize)
    }

    fn check_capacity(capacity: u32) -> Result<()> {
        if capacity == 0 {
            return Err(Error::invalid("capacity must be at least 1"));
        }
        Ok(())
    }

    fn from_map(mut map: MmapMut, capacity: u32) -> Self {
        let base = map.as_mut_ptr().cast_const();
        Self {
            _map: map,
            base,
            capacity,
        }
    }

    /// A region private to this process.
    pub fn anonymous(capacity: u32) -> Result<Self> {
        Self::check_capacity(capacity)?;
        let map = MmapMut::map_anon(Self::size(capacity))
            .map_err(Error::io("cannot map anonymous memory"))?;
        let region = Self::from_map(map, capacity);
        region.initialise(boot_id());
        Ok(region)
    }

    /// Maps the region file at `path`, creating (mode 0600) and initialising it if
    /// needed. Initialisation and validation happen under an exclusive `flock`,
    /// which the kernel drops if the process dies, and the magic is written last:
    /// a process killed half-way leaves a file the next opener initialises again.
    /// The acquire path never locks.
    pub fn open(path: &Path, capacity: u32) -> Result<Self> {
        Self::check_capacity(capacity)?;
        let shown = path.display();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // an existing region is validated, never cleared
            .mode(0o600)
            .open(path)
            .map_err(Error::io(format!("cannot open limiter region {shown}")))?;
        let _lock = Flock::exclusive(&file).map_err(Error::io(format!("cannot lock {shown}")))?;
        let len = file
            .metadata()
            .map_err(Error::io(format!("cannot stat {shown}")))?
            .len();
        let size = Self::size(capacity);
        let mut header = [0u8; LINE];
        let readable = len >= LINE as u64 && file.read_exact_at(&mut header, 0).is_ok();
        let word =
            |i: usize| u64::from_ne_bytes(header[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        // No magic yet: never initialised, or its initialiser died before the end.
        let fresh = len == 0 || (readable && word(0) == 0);
        if fresh {
            file.set_len(size as u64)
                .map_err(Error::io(format!("cannot size {shown}")))?;
        } else {
            Self::validate(&shown, [word(0), word(1), word(2)], capacity)?;
            if len != size as u64 {
                return Err(Error::Region(format!(
                    "{shown} is {len} bytes, expected {size}: truncated?"
                )));
            }
        }
        let region = Self::from_map(Self::map_file(&file, size, &shown)?, capacity);
        let boot = boot_id();
        if fresh {
            region.initialise(boot);
        } else if region.header().boot_id.load(Acquire) != boot {
            // The monotonic clock restarted with the machine: stored TATs are
            // meaningless, so every bucket starts full again.
            region
                .entries()
                .iter()
                .for_each(|e| e.tat.store(0, Release));
            region.header().boot_id.store(boot, Release);
        }
        Ok(region)
    }

    fn map_file(file: &File, len: usize, shown: &impl std::fmt::Display) -> Result<MmapMut> {
        // SAFETY: `map_mut` is unsafe because other processes may change the file
        // while it is mapped, which would break a plain `&[u8]`/`&mut [u8]` over it.
        // We never form one: the bytes are only reached as atomics (`header`,
        // `entries`), which are sound under concurrent writes. The file is at least
        // `len` bytes (sized or checked just above, under the lock), so every mapped
        // page is backed. Truncating the file under a live mapping would fault
        // (SIGBUS); AgentRouter never does that (it resizes only a file without a
        // magic, i.e. one nobody has mapped as a region), as for any shared memory file.
        unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }
            .map_err(Error::io(format!("cannot map {shown}")))
    }

    fn initialise(&self, boot: u64) {
        let h = self.header();
        h.version.store(VERSION, Relaxed);
        h.capacity.store(u64::from(self.capacity), Relaxed);
        h.boot_id.store(boot, Relaxed);
        h.magic.store(MAGIC, Release);
    }

    /// Checks the header words `[magic, version, capacity]` of an existing file.
    fn validate(
        shown: &impl std::fmt::Display,
        [magic, version, stored]: [u64; 3],
        capacity: u32,
    ) -> Result<()> {
        if magic != MAGIC {
            return Err(Error::Region(format!(
                "{shown} is not a limiter region (bad magic)"
            )));
        }
        if version != VERSION {
            return Err(Error::Region(format!(
                "{shown} has layout version {version}, this build reads version {VERSION}"
            )));
        }
        if stored != u64::from(capacity) {
            return Err(Error::Region(format!(
                "{shown} was created with capacity {stored}, opened with capacity {capacity}"
            )));
        }
        Ok(())
    }

    fn header(&self) -> &Header {
        // SAFETY: the map is `Self::size(capacity)` ≥ one line long and page-aligned
        // (≥ `align_of::<Header>()` = 64), so `base` is a valid, aligned `Header`; its
        // fields are atomics, valid for any bit pattern and sound to share (see
        // `Sync` above). The borrow of `self` keeps the map alive for the reference.
        unsafe { &*self.base.cast::<Header>() }
    }

    fn entries(&self) -> &[Entry] {
        // SAFETY: the map holds one header line and then `capacity` lines (its size
        // is `Self::size(capacity)`, checked against the file at open), and
        // `size_of::<Entry>() == LINE` (asserted at compile time), so the slice lies
        // inside the map; `base + LINE` is 64-byte aligned, as `Entry` requires.
        // `Entry` is atomics only: any bit pattern is valid and sharing is sound.
        // The borrow of `self` keeps the map alive for the slice.
        unsafe {
            std::slice::from_raw_parts(self.base.add(LINE).cast::<Entry>(), self.capacity as usize)
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn entry(&self, slot: u32) -> Result<&Entry> {
        self.entries()
            .get(slot as usize)
            .ok_or(Error::SlotOutOfRange {
                slot: i64::from(slot),
                capacity: self.capacity,
            })
    }

    /// The entry owned by `tag` (a hashed name, non-zero), claiming a free one if
    /// needed: linear probing from `tag % capacity`. Named entries are never freed,
    /// so the probe sequence of a name never has holes.
    pub fn named(&self, tag: u64) -> Result<&Entry> {
        let entries = self.entries();
        let start = (tag % u64::from(self.capacity)) as usize;
        for e in entries[start..].iter().chain(&entries[..start]) {
            let mut owner = e.tag.load(Acquire);
            if owner == 0 {
                // On failure `owner` is the winner, which may be us (another thread
                // claiming the same name).
                owner = e
                    .tag
                    .compare_exchange(0, tag, AcqRel, Acquire)
                    .map_or_else(|w| w, |_| tag);
            }
            if owner == tag {
                return Ok(e);
            }
        }
        Err(Error::Region(format!(
            "the limiter's bucket table is full (capacity {})",
            self.capacity
        )))
    }

    pub fn claim(&self, slot: u32, tag: u64) -> Result<()> {
        if tag == 0 {
            return Err(Error::invalid("tag must be non-zero"));
        }
        self.entry(slot)?.claim(tag);
        Ok(())
    }

    pub fn revoke(&self, slot: u32, tag: u64) -> Result<bool> {
        Ok(tag != 0 && self.entry(slot)?.revoke(tag))
    }

    pub fn is_live(&self, slot: u32, tag: u64) -> Result<bool> {
        Ok(tag != 0 && self.entry(slot)?.is_live(tag))
    }

    pub fn generation(&self) -> u64 {
        self.header().generation.load(Acquire)
    }

    pub fn bump_generation(&self) -> u64 {
        self.header().generation.fetch_add(1, AcqRel) + 1
    }
}

/// An exclusive `flock`, released on drop (and by the kernel if the process dies).
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> std::io::Result<Self> {
        loop {
            // SAFETY: `flock` takes no pointers; its one requirement is an open file
            // descriptor, and `file` (borrowed for the call) keeps it open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self(file));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `exclusive`: the descriptor of `self.0`, open for the call.
        // A failure to unlock is harmless (closing the file unlocks it).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A hash of this boot's id: it changes when the machine reboots, which is when
/// `CLOCK_MONOTONIC` restarts. 0 where the id is unavailable (never resets).
fn boot_id() -> u64 {
    std::fs::read("/proc/sys/kernel/random/boot_id").map_or(0, |id| fnv1a(&id) | 1)
}

/// FNV-1a 64, then a finaliser so the low bits (used for `% capacity`) are well mixed.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    crate::gcra::mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limiter.region");
        (dir, path)
    }

    #[test]
    fn file_is_created_0600_and_shared_between_openers() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = tmp();
        let a = Region::open(&path, 8).unwrap();
        let b = Region::open(&path, 8).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(a.bump_generation(), 1);
        assert_eq!(b.generation(), 1);
        a.claim(3, 42).unwrap();
        assert!(b.is_live(3, 42).unwrap());
        assert!(b.revoke(3, 42).unwrap());
        assert!(!a.is_live(3, 42).unwrap());
    }

    #[test]
    fn mismatches_are_clear_errors() {
        let (_dir, path) = tmp();
        drop(Region::open(&path, 8).unwrap());
        let err = Region::open(&path, 16).err().unwrap().to_string();
        assert!(err.contains("capacity"), "{err}");
        std::fs::write(&path, vec![7u8; 64 * 9]).unwrap();
        let err = Region::open(&path, 8).err().unwrap().to_string();
        assert!(err.contains("bad magic"), "{err}");
    }

    #[test]
    fn a_half_initialised_file_is_initialised_again() {
        let (_dir, path) = tmp();
        std::fs::write(&path, vec![0u8; 100]).unwrap(); // killed after sizing, before the magic
        let r = Region::open(&path, 4).unwrap();
        assert_eq!(r.capacity(), 4);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 5);
    }

    #[test]
    fn a_new_boot_resets_every_tat() {
        let (_dir, path) = tmp();
        let r = Region::open(&path, 2).unwrap();
        r.entry(1).unwrap().tat.store(99, Relaxed);
        r.header().boot_id.store(12345, Relaxed); // as if written before a reboot
        drop(r);
        let r = Region::open(&path, 2).unwrap();
        assert_eq!(r.entry(1).unwrap().tat.load(Relaxed), 0);
        assert_eq!(r.header().boot_id.load(Relaxed), boot_id());
    }

    #[test]
    fn named_entries_probe_linearly_and_fill_up() {
        let r = Region::anonymous(2).unwrap();
        let a = r.named(4).unwrap() as *const Entry; // 4 % 2 = 0
        let b = r.named(6).unwrap() as *const Entry; // collides, probes to 1
        assert_ne!(a, b);
        assert_eq!(r.named(4).unwrap() as *const Entry, a);
        assert_eq!(r.named(6).unwrap() as *const Entry, b);
        assert!(matches!(r.named(8), Err(Error::Region(_))));
    }

    #[test]
    fn slots_reject_bad_indices_and_zero_tags() {
        let r = Region::anonymous(2).unwrap();
        assert!(matches!(
            r.claim(2, 1),
            Err(Error::SlotOutOfRange {
                slot: 2,
                capacity: 2
            })
        ));
        assert!(matches!(r.claim(0, 0), Err(Error::InvalidArgument(_))));
        assert!(!r.is_live(0, 0).unwrap());
    }

    #[test]
    fn reclaiming_a_slot_retires_the_old_tag() {
        let r = Region::anonymous(1).unwrap();
        r.claim(0, 7).unwrap();
        r.entry(0).unwrap().tat.store(5, Relaxed);
        r.claim(0, 8).unwrap();
        assert!(!r.is_live(0, 7).unwrap());
        assert!(r.is_live(0, 8).unwrap());
        assert!(
            !r.revoke(0, 7).unwrap(),
            "revoking the old owner must not touch the new one"
        );
        assert!(r.is_live(0, 8).unwrap());
        assert_eq!(r.entry(0).unwrap().tat.load(Relaxed), 0);
    }
}
