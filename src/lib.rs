//! capi-vip-allocator: control-plane and ingress VIPs for Cluster API topology Clusters.
//!
//! Data flow: watches → `controller::gather` (a [`plan::Snapshot`] from the caches) → [`plan::plan`] (pure rules)
//! → `controller::act` (claims, Cluster patch, Events, metrics).

pub mod api;
pub mod app;
pub mod cli;
pub mod controller;
pub mod hook;
pub mod http;
pub mod leader;
pub mod names;
pub mod plan;
pub mod telemetry;
