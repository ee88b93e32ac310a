//! The shipped price table.
//!
//! CAVEAT: these are the providers' public list prices (standard tier, no batch or regional
//! discounts, no negotiated rates) as known to the author in late 2025, with the earlier
//! models the providers still serve (o1, GPT-4.5, GPT-4 Turbo, Claude 3). Prices change, and
//! this table is not updated by itself: verify against the providers' pricing pages and
//! override entries in config (`PriceTable::with_overrides`). Not modelled: Anthropic's 1-hour
//! cache writes (2x input rather than the 1.25x used here), long-context surcharges (Sonnet
//! 4 / 4.5 over 200k input tokens), audio and image tokens, and the flex / priority tiers.
//! Model variants not listed take the price of their longest listed prefix.

/// `(provider, model pattern, input, cached input, output, cache write)`, in micro-dollars per
/// million tokens; `None` means "same as input".
pub(super) type Row = (
    &'static str,
    &'static str,
    u64,
    Option<u64>,
    u64,
    Option<u64>,
);

const fn usd(dollars: u64, micro: u64) -> u64 {
    dollars * 1_000_000 + micro
}

#[rustfmt::skip]
pub(super) const DEFAULTS: &[Row] = &[
    // OpenAI: input, cached input, output. OpenAI does not charge for cache writes.
    ("openai", "gpt-5*", usd(1, 250_000), Some(usd(0, 125_000)), usd(10, 0), None),
    ("openai", "gpt-5-mini*", usd(0, 250_000), Some(usd(0, 25_000)), usd(2, 0), None),
    ("openai", "gpt-5-nano*", usd(0, 50_000), Some(usd(0, 5_000)), usd(0, 400_000), None),
    ("openai", "gpt-5-pro*", usd(15, 0), None, usd(120, 0), None),
    ("openai", "gpt-4.1*", usd(2, 0), Some(usd(0, 500_000)), usd(8, 0), None),
    ("openai", "gpt-4.1-mini*", usd(0, 400_000), Some(usd(0, 100_000)), usd(1, 600_000), None),
    ("openai", "gpt-4.1-nano*", usd(0, 100_000), Some(usd(0, 25_000)), usd(0, 400_000), None),
    ("openai", "gpt-4o", usd(2, 500_000), Some(usd(1, 250_000)), usd(10, 0), None),
    ("openai", "gpt-4o-*", usd(2, 500_000), Some(usd(1, 250_000)), usd(10, 0), None),
    ("openai", "gpt-4o-2024-05-13", usd(5, 0), None, usd(15, 0), None),
    ("openai", "gpt-4o-mini*", usd(0, 150_000), Some(usd(0, 75_000)), usd(0, 600_000), None),
    ("openai", "o3*", usd(2, 0), Some(usd(0, 500_000)), usd(8, 0), None),
    ("openai", "o3-mini*", usd(1, 100_000), Some(usd(0, 550_000)), usd(4, 400_000), None),
    ("openai", "o3-pro*", usd(20, 0), None, usd(80, 0), None),
    ("openai", "o3-deep-research*", usd(10, 0), Some(usd(2, 500_000)), usd(40, 0), None),
    ("openai", "o4-mini*", usd(1, 100_000), Some(usd(0, 275_000)), usd(4, 400_000), None),
    ("openai", "o4-mini-deep-research*", usd(2, 0), Some(usd(0, 500_000)), usd(8, 0), None),
    // OpenAI, earlier and preview models still served (list prices).
    ("openai", "o1", usd(15, 0), Some(usd(7, 500_000)), usd(60, 0), None),
    ("openai", "o1-2024-12-17", usd(15, 0), Some(usd(7, 500_000)), usd(60, 0), None),
    ("openai", "o1-preview*", usd(15, 0), Some(usd(7, 500_000)), usd(60, 0), None),
    ("openai", "o1-pro*", usd(150, 0), None, usd(600, 0), None),
    ("openai", "o1-mini*", usd(1, 100_000), Some(usd(0, 550_000)), usd(4, 400_000), None),
    ("openai", "gpt-4.5*", usd(75, 0), Some(usd(37, 500_000)), usd(150, 0), None),
    ("openai", "chatgpt-4o*", usd(5, 0), None, usd(15, 0), None),
    ("openai", "gpt-4-turbo*", usd(10, 0), None, usd(30, 0), None),
    ("openai", "gpt-4-1106*", usd(10, 0), None, usd(30, 0), None),
    ("openai", "gpt-4-0125*", usd(10, 0), None, usd(30, 0), None),
    ("openai", "gpt-4", usd(30, 0), None, usd(60, 0), None),
    ("openai", "gpt-4-0613", usd(30, 0), None, usd(60, 0), None),
    ("openai", "gpt-4-32k*", usd(60, 0), None, usd(120, 0), None),
    ("openai", "gpt-3.5-turbo*", usd(0, 500_000), None, usd(1, 500_000), None),
    ("openai", "gpt-3.5-turbo-instruct*", usd(1, 500_000), None, usd(2, 0), None),
    ("openai", "davinci-002", usd(2, 0), None, usd(2, 0), None),
    ("openai", "babbage-002", usd(0, 400_000), None, usd(0, 400_000), None),
    ("openai", "text-embedding-3-small", usd(0, 20_000), None, 0, None),
    ("openai", "text-embedding-3-large", usd(0, 130_000), None, 0, None),
    ("openai", "text-embedding-ada-002", usd(0, 100_000), None, 0, None),
    // Anthropic: input, cache read (0.1x), output, 5-minute cache write (1.25x).
    ("anthropic", "claude-opus-4*", usd(15, 0), Some(usd(1, 500_000)), usd(75, 0), Some(usd(18, 750_000))),
    ("anthropic", "claude-opus-4-5*", usd(5, 0), Some(usd(0, 500_000)), usd(25, 0), Some(usd(6, 250_000))),
    ("anthropic", "claude-sonnet-4*", usd(3, 0), Some(usd(0, 300_000)), usd(15, 0), Some(usd(3, 750_000))),
    ("anthropic", "claude-haiku-4*", usd(1, 0), Some(usd(0, 100_000)), usd(5, 0), Some(usd(1, 250_000))),
    ("anthropic", "claude-3-7-sonnet*", usd(3, 0), Some(usd(0, 300_000)), usd(15, 0), Some(usd(3, 750_000))),
    ("anthropic", "claude-3-5-haiku*", usd(0, 800_000), Some(usd(0, 80_000)), usd(4, 0), Some(usd(1, 0))),
    ("anthropic", "claude-3-5-sonnet*", usd(3, 0), Some(usd(0, 300_000)), usd(15, 0), Some(usd(3, 750_000))),
    ("anthropic", "claude-3-opus*", usd(15, 0), Some(usd(1, 500_000)), usd(75, 0), Some(usd(18, 750_000))),
    ("anthropic", "claude-3-sonnet*", usd(3, 0), Some(usd(0, 300_000)), usd(15, 0), Some(usd(3, 750_000))),
    ("anthropic", "claude-3-haiku*", usd(0, 250_000), Some(usd(0, 30_000)), usd(1, 250_000), Some(usd(0, 300_000))),
    // Cohere: input, output (no cache pricing).
    ("cohere", "command-a*", usd(2, 500_000), None, usd(10, 0), None),
    ("cohere", "command-r-plus*", usd(2, 500_000), None, usd(10, 0), None),
    ("cohere", "command-r*", usd(0, 150_000), None, usd(0, 600_000), None),
    ("cohere", "command-r7b*", usd(0, 37_500), None, usd(0, 150_000), None),
    ("cohere", "embed-*", usd(0, 100_000), None, 0, None),
];
