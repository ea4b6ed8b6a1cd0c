mod concurrency;
mod config;
mod faults;
mod harness;
mod protocol;
