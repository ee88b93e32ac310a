//! Generated completion text: `n` lorem-ipsum words, one word per token.

const WORDS: [&str; 19] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
];

/// The `i`-th generated word.
fn word(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

/// The full completion: `n` words separated by single spaces.
pub fn completion(n: u64) -> String {
    pieces(n).concat()
}

/// The completion split into stream deltas, one word each; every piece but
/// the first carries a leading space so that concatenating them yields
/// [`completion`].
pub fn pieces(n: u64) -> Vec<String> {
    (0..n as usize)
        .map(|i| {
            if i == 0 {
                word(i).to_string()
            } else {
                format!(" {}", word(i))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_has_n_words() {
        assert_eq!(completion(0), "");
        assert_eq!(completion(3), "lorem ipsum dolor");
        assert_eq!(completion(40).split_whitespace().count(), 40);
    }

    #[test]
    fn pieces_concatenate_to_completion() {
        let p = pieces(25);
        assert_eq!(p.len(), 25);
        assert_eq!(p[0], "lorem");
        assert_eq!(p[1], " ipsum");
        assert_eq!(p.concat(), completion(25));
    }
}
