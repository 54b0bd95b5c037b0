//! `Balance` end to end: against scripted mock endpoints, and against real hyper servers on
//! loopback.

mod backpressure;
mod loopback;
mod mock;
mod support;
