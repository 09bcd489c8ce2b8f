//! Every citation of a `docs/METHOD.md` section, in the code, the docs and
//! the README, names a heading that exists: code cites the method by anchor
//! (`docs/METHOD.md#hardening`), and a renamed heading must not leave
//! citations pointing nowhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dgms_test_support::fixtures::workspace_root;

/// GitHub's anchor for a heading: lower case, punctuation other than `-`
/// and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(method: &str) -> BTreeSet<String> {
    method
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// Anchors following each occurrence of `marker` in `text`.
fn cited_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .map(|(i, _)| {
            let rest = &text[i + marker.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        // An empty anchor is the marker itself quoted (as in this file).
        .filter(|anchor| !anchor.is_empty())
        .collect()
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" {
                source_files(&path, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "md" || e == "toml")
        {
            out.push(path);
        }
    }
}

#[test]
fn cited_method_sections_exist() {
    let root = workspace_root();
    let method_path = root.join("docs/METHOD.md");
    let method = std::fs::read_to_string(&method_path)
        .unwrap_or_else(|e| panic!("{}: {e}", method_path.display()));
    let known = anchors(&method);
    for expected in [
        "mixture",
        "soft-weights",
        "gradients",
        "hardening",
        "reference-flaws",
    ] {
        assert!(
            known.contains(expected),
            "no heading for #{expected}: {known:?}"
        );
    }

    let mut files = vec![root.join("README.md")];
    for dir in ["crates", "xtask", "docs"] {
        source_files(&root.join(dir), &mut files);
    }
    let mut broken = Vec::new();
    let mut citations = 0;
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let mut cited = cited_after(&text, "METHOD.md#");
        if file == &method_path {
            cited.extend(cited_after(&text, "](#"));
        }
        for anchor in cited {
            citations += 1;
            if !known.contains(anchor) {
                broken.push(format!("{}: #{anchor}", file.display()));
            }
        }
    }
    assert!(citations > 0, "no citations of docs/METHOD.md found");
    assert!(
        broken.is_empty(),
        "citations of docs/METHOD.md sections that do not exist (headings: {known:?}):\n{}",
        broken.join("\n")
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("Soft weights"), "soft-weights");
    assert_eq!(slug(" Reference flaws "), "reference-flaws");
    assert_eq!(slug("What's new (v2)"), "whats-new-v2");
}
