//! The boxed future of the backend's object-safe traits.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, for the object-safe traits of this module.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
