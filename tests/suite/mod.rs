mod concurrency;
mod config;
mod faults;
mod harness;
mod hostile;
mod lifecycle;
mod load;
mod protocol;
