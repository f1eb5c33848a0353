//! Validators: pipe as a chain of several nodes on commonware's simplex consensus.
pub mod app;
pub mod block;
pub mod clock;
pub mod finalizer;
pub mod validator;
