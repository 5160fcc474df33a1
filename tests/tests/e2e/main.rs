//! End-to-end tests: one binary, one module per area, all against a real broker over TCP.

mod admin;
mod admin_api;
mod admin_cli;
mod admin_dashboard;
mod admin_openapi;
mod auth;
mod bad_input;
mod datagram;
mod dedupe;
mod delivery;
mod descriptors;
mod durability;
mod early;
mod full_disk;
mod handshake;
mod liveness;
mod notify;
mod partial_frames;
mod reload;
mod store_check;
mod store_damage;
mod store_identity;
mod store_vanished;
mod support;
mod tls;
mod undeliverable;
