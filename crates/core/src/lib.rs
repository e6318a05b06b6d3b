//! Shared vocabulary of Gatehouse: identities, resources and the versioned audit event schema.
//!
//! This crate does no I/O. Every other crate speaks in these types, and the ledger writes
//! them as canonical JSON lines, so a change here is a change to the on-disk format: bump
//! [`SCHEMA_VERSION`] and keep readers of older versions working.

pub mod clock;
pub mod event;
pub mod evidence;
pub mod glob;
pub mod refusal;

pub use event::{
    Actor, ActorKind, ChunkRef, Durability, EntryHeader, Event, EventKind, ResourceRef,
    SCHEMA_VERSION, write_entry_line,
};
pub use evidence::Evidence;
pub use glob::glob_match;
pub use refusal::Refusal;
