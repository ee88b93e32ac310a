use super::*;

fn entry(provider: &str, model: &str, input: f64, output: f64) -> PriceEntry {
    PriceEntry {
        provider: provider.into(),
        model: model.into(),
        input_per_mtok_usd: input,
        cached_input_per_mtok_usd: None,
        output_per_mtok_usd: output,
        cache_write_per_mtok_usd: None,
    }
}

fn usage(model: &str, input: u64, cached: u64, created: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        cache_creation_input_tokens: created,
        output_tokens: output,
        reasoning_tokens: 0,
        model: Some(model.into()),
    }
}

#[test]
fn most_specific_pattern_wins() {
    let table = PriceTable::defaults();
    let input = |model: &str| table.lookup("openai", model).map(|p| p.input);
    assert_eq!(input("gpt-4o"), Some(2_500_000));
    assert_eq!(input("gpt-4o-2024-08-06"), Some(2_500_000));
    assert_eq!(input("gpt-4o-2024-05-13"), Some(5_000_000));
    assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(150_000));
    assert_eq!(input("gpt-4.1-nano-2025-04-14"), Some(100_000));
    assert_eq!(input("o3-mini"), Some(1_100_000));
    assert_eq!(input("o3-2025-04-16"), Some(2_000_000));
    assert_eq!(input("o4-mini-2025-04-16"), Some(1_100_000));
    assert_eq!(input("text-embedding-3-large"), Some(130_000));
    assert_eq!(input("text-embedding-3-large-v9"), None);
    assert_eq!(input("davinci-002"), Some(2_000_000));
    assert_eq!(input("curie-001"), None);
    assert_eq!(input("o1-pro-2025-03-19"), Some(150_000_000));
    assert_eq!(input("gpt-4.5-preview"), Some(75_000_000));
    assert_eq!(input("gpt-4-turbo"), Some(10_000_000));
    assert_eq!(input("chatgpt-4o-latest"), Some(5_000_000));
    assert_eq!(table.lookup("anthropic", "gpt-4o"), None);
    let claude = |model: &str| table.lookup("anthropic", model).map(|p| p.output);
    assert_eq!(claude("claude-opus-4-1-20250805"), Some(75_000_000));
    assert_eq!(claude("claude-opus-4-5-20251101"), Some(25_000_000));
    assert_eq!(claude("claude-sonnet-4-5"), Some(15_000_000));
    assert_eq!(claude("claude-haiku-4-5-20251001"), Some(5_000_000));
    assert_eq!(claude("claude-3-5-haiku-20241022"), Some(4_000_000));
    assert_eq!(claude("claude-3-opus-20240229"), Some(75_000_000));
}

#[test]
fn an_unpriced_model_costs_its_providers_highest_prices() {
    use crate::providers::ProviderKind;
    let table = PriceTable::defaults();
    let used = Usage {
        input_tokens: 1_000_000,
        output_tokens: 1_000_000,
        model: Some("gpt-9-hypothetical".into()),
        ..Usage::default()
    };
    // OpenAI's highest: o1-pro, $150 in and $600 out per million.
    assert_eq!(
        table.cost_or_ceiling(ProviderKind::Openai, &used),
        (750_000_000, false)
    );
    assert_eq!(
        table.cost_or_ceiling(ProviderKind::AzureOpenai, &used),
        (750_000_000, false),
        "Azure takes OpenAI's prices"
    );
    let opus = Usage {
        model: Some("claude-3-opus-20240229".into()),
        ..used.clone()
    };
    assert_eq!(
        table.cost_or_ceiling(ProviderKind::Anthropic, &opus),
        (90_000_000, true)
    );
    let none = Usage {
        model: None,
        ..used
    };
    assert!(table.cost_or_ceiling(ProviderKind::Generic, &none).0 >= 750_000_000);
}

#[test]
fn wildcards_rank_below_names() {
    let table = PriceTable::from_entries(&[
        entry("*", "*", 9.0, 9.0),
        entry("openai", "*", 8.0, 8.0),
        entry("*", "gpt-4o", 7.0, 7.0),
        entry("openai", "gpt-4o", 6.0, 6.0),
        entry("azure_openai", "gpt-*", 5.0, 5.0),
    ])
    .unwrap();
    let input =
        |provider: &str, model: &str| table.lookup(provider, model).map(|p| p.input / 1_000_000);
    assert_eq!(input("openai", "gpt-4o"), Some(6));
    assert_eq!(input("azure_openai", "gpt-4o"), Some(7));
    assert_eq!(input("azure_openai", "gpt-4.1"), Some(5));
    assert_eq!(input("openai", "unknown"), Some(8));
    assert_eq!(input("cohere", "command-r"), Some(9));
    assert_eq!(PriceTable::default().lookup("openai", "gpt-4o"), None);
}

#[test]
fn integer_cost_rounds_up_to_a_micro_dollar() {
    let table = PriceTable::defaults();
    // gpt-4o-mini: 0.15 / 0.075 cached / 0.60 per Mtok. 1 uncached token = 0.15 µUSD -> 1.
    let one = usage("gpt-4o-mini", 1, 0, 0, 0);
    assert_eq!(table.cost_micro_usd("openai", &one), Some(1));
    assert_eq!(
        table.cost_micro_usd("openai", &usage("gpt-4o-mini", 0, 0, 0, 0)),
        Some(0)
    );
    // 1000 in (400 cached) + 500 out: 600*0.15 + 400*0.075 + 500*0.6 = 90 + 30 + 300 = 420.
    let u = usage("gpt-4o-mini", 1000, 400, 0, 500);
    assert_eq!(table.cost_micro_usd("openai", &u), Some(420));
    // Anthropic Sonnet: 100 base + 2000 read + 1000 written, 300 out:
    // 100*3 + 2000*0.3 + 1000*3.75 + 300*15 = 300 + 600 + 3750 + 4500 = 9150.
    let u = usage("claude-sonnet-4-20250514", 3100, 2000, 1000, 300);
    assert_eq!(table.cost_micro_usd("anthropic", &u), Some(9150));
    // 1 token of text-embedding-3-small is 0.02 µUSD: still charged 1.
    let u = usage("text-embedding-3-small", 1, 0, 0, 0);
    assert_eq!(table.cost_micro_usd("openai", &u), Some(1));
    let u = usage("text-embedding-3-small", 50, 0, 0, 0);
    assert_eq!(table.cost_micro_usd("openai", &u), Some(1));
    let u = usage("text-embedding-3-small", 51, 0, 0, 0);
    assert_eq!(table.cost_micro_usd("openai", &u), Some(2));
}

#[test]
fn cost_saturates_and_tolerates_inconsistent_counts() {
    let price = Price {
        input: u64::MAX,
        cached_input: u64::MAX,
        output: u64::MAX,
        cache_write: u64::MAX,
    };
    let huge = usage("m", u64::MAX, 0, 0, u64::MAX);
    assert_eq!(price.cost_micro_usd(&huge), u64::MAX);
    // More cached than total input: uncached is 0, the cached part is still charged.
    let price = Price {
        input: 1_000_000,
        cached_input: 500_000,
        output: 0,
        cache_write: 0,
    };
    assert_eq!(price.cost_micro_usd(&usage("m", 2, 4, 0, 0)), 2);
    let table = PriceTable::defaults();
    let mut no_model = usage("gpt-4o", 1, 0, 0, 0);
    no_model.model = None;
    assert_eq!(table.cost_micro_usd("openai", &no_model), None);
}

#[test]
fn overrides_replace_same_pattern_and_convert_decimals() {
    let mut cheap = entry("openai", "gpt-4o", 0.000001, 1.1);
    cheap.cached_input_per_mtok_usd = Some(0.075);
    let table = PriceTable::defaults().with_overrides(&[cheap]).unwrap();
    let price = table.lookup("openai", "gpt-4o").unwrap();
    assert_eq!(
        (price.input, price.cached_input, price.output),
        (1, 75_000, 1_100_000)
    );
    assert_eq!(price.cache_write, 1);
    assert_eq!(table.len(), PriceTable::defaults().len());
    let table = table
        .with_overrides(&[entry("openai", "gpt-9", 1.0, 1.0)])
        .unwrap();
    assert_eq!(table.len(), PriceTable::defaults().len() + 1);
}

#[test]
fn validation_names_the_field() {
    let check = |entries: &[PriceEntry]| PriceTable::from_entries(entries).unwrap_err().to_string();
    let ok = |model: &str| entry("openai", model, 1.0, 2.0);
    assert_eq!(
        check(&[ok("a"), ok("b*"), ok("*"), entry("openai", "", 1.0, 1.0)]),
        "pricing[3].model: empty pattern"
    );
    assert_eq!(
        check(&[entry(" ", "m", 1.0, 1.0)]),
        "pricing[0].provider: empty provider"
    );
    assert!(check(&[entry("openai", "gpt-*-mini", 1.0, 1.0)])
        .starts_with("pricing[0].model: \"gpt-*-mini\": '*' may only end"));
    assert!(check(&[entry("openai", &"m".repeat(200), 1.0, 1.0)])
        .starts_with("pricing[0].model: longer than 128"));
    assert!(check(&[entry("openai", "m", -1.0, 1.0)])
        .starts_with("pricing[0].input_per_mtok_usd: -1 must be"));
    assert!(check(&[entry("openai", "m", 1.0, f64::NAN)])
        .starts_with("pricing[0].output_per_mtok_usd:"));
    let mut bad_cache = entry("openai", "m", 1.0, 1.0);
    bad_cache.cache_write_per_mtok_usd = Some(2e6);
    assert!(check(&[bad_cache]).starts_with("pricing[0].cache_write_per_mtok_usd:"));
    assert_eq!(
        check(&[
            entry("a", "m", 1.0, 1.0),
            entry("b", "m", 1.0, 1.0),
            entry("a", "m", 2.0, 2.0)
        ]),
        "pricing[2].model: duplicates pricing[0]"
    );
}

#[test]
fn entries_deserialize_strictly() {
    let yaml = "- provider: anthropic\n  model: claude-sonnet-4*\n  input_per_mtok_usd: 3\n  cached_input_per_mtok_usd: 0.3\n  output_per_mtok_usd: 15\n  cache_write_per_mtok_usd: 3.75\n";
    let entries: Vec<PriceEntry> = serde_yaml::from_str(yaml).unwrap();
    let table = PriceTable::from_entries(&entries).unwrap();
    assert_eq!(
        table.lookup("anthropic", "claude-sonnet-4-5"),
        Some(Price {
            input: 3_000_000,
            cached_input: 300_000,
            output: 15_000_000,
            cache_write: 3_750_000
        })
    );
    let typo = "- provider: openai\n  model: m\n  input_per_mtok_usd: 1\n  output_per_mtok_usd: 1\n  output_per_mtok: 1\n";
    assert!(serde_yaml::from_str::<Vec<PriceEntry>>(typo).is_err());
}

#[test]
fn shipped_defaults_are_valid_patterns() {
    for &(provider, model, ..) in super::super::pricing_defaults::DEFAULTS {
        assert!(Pattern::parse(model).is_ok(), "{provider} {model}");
    }
    let mut keys: Vec<_> = super::super::pricing_defaults::DEFAULTS
        .iter()
        .map(|&(p, m, ..)| (p, m))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "no duplicate default rows");
}
