//! Provider credential rotation, the state and sources half: the durable rotation record
//! (`record`, pure), the provider adapters behind one trait (`adapter`, one file per provider,
//! registered in `adapters`), and the rotator's Vault side (`store`). The transaction that
//! drives them is `crate::rotator`.

pub mod adapter;
pub mod adapters;
pub mod anthropic;
pub mod azure;
pub mod generic;
pub mod http;
pub mod openai;
pub mod record;
pub mod store;
