//! What clients expect of geth beyond the methods themselves: the text of an unknown method's
//! error, and the shape of subscription ids.
//!
//! - jsonrpsee answers an unknown method with `-32601 "Method not found"`. geth says `the
//!   method eth_newFilter does not exist/is not available`, and clients match that text:
//!   ethers v6 treats a missing `eth_newFilter` as "fall back to polling" only with geth's
//!   words, and with jsonrpsee's the process died of an unhandled rejection. [`GethErrors`]
//!   answers unknown methods with geth's code and text, in single calls and in batches.
//! - geth's subscription and filter ids are 16 random bytes in hex, as a quantity: `0x` and up
//!   to 32 digits, leading zeros trimmed (clients such as alloy read them as numbers and write
//!   them back that way). viem's WebSocket transport ignores notifications whose id is a JSON
//!   number. [`HexIds`] makes ids of geth's shape.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use jsonrpsee::{
    core::{
        middleware::{Batch, BatchEntry, Notification, RpcServiceT},
        server::{BatchResponseBuilder, MethodResponse},
        traits::IdProvider,
    },
    types::{ErrorObject, Request, SubscriptionId},
};

/// geth's code for an unknown method.
const METHOD_NOT_FOUND: i32 = -32601;

/// geth's error for an unknown method.
pub fn unknown_method(name: &str) -> ErrorObject<'static> {
    ErrorObject::owned(
        METHOD_NOT_FOUND,
        format!("the method {name} does not exist/is not available"),
        None::<()>,
    )
}

/// The layer that puts [`GethErrors`] in front of the server's methods.
#[derive(Clone, Debug)]
pub struct GethErrorsLayer {
    methods: Arc<HashSet<String>>,
}

impl GethErrorsLayer {
    /// `methods`: every method name the server serves (subscriptions included).
    pub fn new(methods: impl IntoIterator<Item = String>) -> Self {
        Self {
            methods: Arc::new(methods.into_iter().collect()),
        }
    }
}

impl<S> tower::Layer<S> for GethErrorsLayer {
    type Service = GethErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GethErrors {
            inner,
            methods: self.methods.clone(),
            max_response: usize::MAX,
        }
    }
}

/// Answers calls of unknown methods as geth does; passes the rest on.
#[derive(Clone, Debug)]
pub struct GethErrors<S> {
    inner: S,
    methods: Arc<HashSet<String>>,
    max_response: usize,
}

impl<S> RpcServiceT for GethErrors<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let known = self.methods.contains(request.method_name());
        let inner = self.inner.clone();
        async move {
            if known {
                inner.call(request).await
            } else {
                MethodResponse::error(
                    request.id().into_owned(),
                    unknown_method(request.method_name()),
                )
            }
        }
    }

    /// Each call of the batch through [`GethErrors::call`], as jsonrpsee's own service
    /// does with its calls (a batch would otherwise bypass this layer).
    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let this = self.clone();
        async move {
            let mut out = BatchResponseBuilder::new_with_limit(this.max_response);
            let mut notified = false;
            for entry in batch.into_iter() {
                let response = match entry {
                    Ok(BatchEntry::Call(request)) => this.call(request).await,
                    Ok(BatchEntry::Notification(n)) => {
                        notified = true;
                        this.inner.notification(n).await;
                        continue;
                    }
                    Err(e) => {
                        let (err, id) = e.into_parts();
                        MethodResponse::error(id, err)
                    }
                };
                if let Err(too_big) = out.append(response) {
                    return too_big;
                }
            }
            if out.is_empty() && notified {
                MethodResponse::notification()
            } else {
                MethodResponse::from_batch(out.finish())
            }
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

/// Subscription ids as geth makes them: 16 unpredictable bytes as a hex quantity (`0x`, up to
/// 32 digits, no leading zeros).
#[derive(Debug)]
pub struct HexIds {
    seed: [u8; 32],
    next: AtomicU64,
}

impl Default for HexIds {
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let here = &now as *const u128 as usize;
        Self {
            seed: alloy_primitives::keccak256(
                [now.to_le_bytes().as_slice(), &here.to_le_bytes()].concat(),
            )
            .0,
            next: AtomicU64::new(0),
        }
    }
}

impl IdProvider for HexIds {
    fn next_id(&self) -> SubscriptionId<'static> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let digest = alloy_primitives::keccak256([self.seed.as_slice(), &n.to_le_bytes()].concat());
        SubscriptionId::Str(canonical_id(&alloy_primitives::hex::encode(&digest[..16])).into())
    }
}

/// An id in geth's form: `0x`, lowercase hex digits, no leading zeros (`0x0` for zero). Ids
/// clients send back are read through it too, so a client that pads or upper-cases finds its
/// filter.
pub fn canonical_id(hex: &str) -> String {
    let digits = hex
        .strip_prefix("0x")
        .unwrap_or(hex)
        .trim_start_matches('0');
    if digits.is_empty() {
        "0x0".into()
    } else {
        format!("0x{}", digits.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_look_like_geths_and_do_not_repeat() {
        let ids = HexIds::default();
        let a = ids.next_id();
        let b = ids.next_id();
        for id in [&a, &b] {
            let SubscriptionId::Str(s) = id else {
                panic!("a string id")
            };
            assert!(s.len() <= 34 && s.len() > 20, "{s}");
            assert!(s.starts_with("0x") && !s.starts_with("0x0"), "{s}");
            assert!(s[2..].chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(a, b);
        assert_eq!(canonical_id("0x00Ab"), "0xab");
        assert_eq!(canonical_id("0x000"), "0x0");
    }

    #[test]
    fn an_unknown_method_gets_geths_words() {
        let e = unknown_method("eth_newFilter");
        assert_eq!(e.code(), -32601);
        assert_eq!(
            e.message(),
            "the method eth_newFilter does not exist/is not available"
        );
    }
}
