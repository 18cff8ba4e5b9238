//! `moat doctor`: what this kernel offers and what moat will enforce.

use crate::cli::DoctorArgs;

pub fn run(_args: &DoctorArgs) -> i32 {
    eprintln!("moat doctor: not implemented yet");
    1
}
