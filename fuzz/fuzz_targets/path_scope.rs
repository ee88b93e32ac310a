//! Path normalization and route matching. The input is text: the first line is the request
//! (`METHOD raw-path`), each further line a route pattern as a config would list it.
#![no_main]

use keygate::path::normalize;
use keygate::scope::{check, RoutePattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let request = lines.next().unwrap_or_default();
    let (method, raw_path) = request.split_once(' ').unwrap_or(("GET", request));

    let mut routes = Vec::new();
    for line in lines.take(64) {
        if let Ok(route) = line.parse::<RoutePattern>() {
            // What a route displays as parses back to the same route.
            let shown = route.to_string();
            let again: RoutePattern = shown.parse().expect("displayed route parses");
            assert_eq!(again, route, "{line:?} displayed as {shown:?}");
            routes.push(route);
        }
    }

    let Ok(path) = normalize(raw_path) else {
        return;
    };
    let path = path.into_owned();
    // Canonical: absolute, no query or fragment, no empty, '.' or '..' segments, only
    // visible ASCII, no backslash, and normalizing again changes nothing.
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains(['?', '#', '\\']), "{path:?}");
    assert!(path.bytes().all(|b| (0x21..0x7f).contains(&b)), "{path:?}");
    assert!(path == "/" || !path.ends_with('/'), "{path:?}");
    for segment in path.split('/').skip(1) {
        assert!(path == "/" || !segment.is_empty(), "{path:?}");
        assert!(
            segment != "." && segment != "..",
            "{raw_path:?} -> {path:?}"
        );
        // An escape left in place is never a dot or a separator in disguise.
        let lower = segment.to_ascii_lowercase();
        assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"));
    }
    assert_eq!(normalize(&path).expect("normalized path normalizes"), path);

    let verdict = check(&routes, method, &path);
    // Deny by default: nothing passes an empty scope.
    if routes.is_empty() {
        assert!(verdict.is_err());
    }
    // The decision is a function of the routes as a set: order does not matter.
    let mut reversed = routes.clone();
    reversed.reverse();
    assert_eq!(check(&reversed, method, &path), verdict);
});
