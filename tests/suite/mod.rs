mod concurrency;
mod config;
mod faults;
mod harness;
mod lifecycle;
mod protocol;
