//! Conformance of the testbed with a real API server, through a real `kube::Client`.
//! Each module covers numbered points of issue 2.

mod common;

mod api;
mod clusterctl;
mod fidelity;
mod gc;
mod ipam;
mod ipam_upstream;
mod measure;
mod metal3;
mod schema;
mod watch;
mod writes;
