//! Integration tests: the real daemon, the real binary, real files and sockets.
//! One test binary with modules, so it links once.

mod fixtures;
mod harness;
mod images;
mod layers;
mod network;
mod pull;
mod registry;

mod api;
mod auth;
mod browser;
mod build;
mod cli;
mod config;
mod containers;
mod database;
mod dockerd;
mod runtime;
mod snapshots;
mod startup;
mod tls;
mod web;
