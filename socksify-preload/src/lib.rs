//! The LD_PRELOAD library. Its hooks arrive with the transparent-TCP work; for now it is an
//! empty shared object that the CLI can already locate.
