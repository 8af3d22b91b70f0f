//! Reading token ids: a text file of integers (one per line or separated by any whitespace),
//! a `.npy` of integers, or one array of an `.npz` (`DATA.npz:KEY`, every id that occurs).

use std::path::Path;

use ndarray_npy::ReadNpyExt;

use crate::error::{Error, Result};
use crate::replay::masks::{check_npy_sizes, npz_entries};

/// The integers of a `.npy` (any shape, any integer type); `None` when its elements are not
/// integers.
fn npy_integers(npy: &[u8]) -> Option<Vec<i64>> {
    macro_rules! attempt {
        ($($t:ty),*) => {{
            $(if let Ok(a) = ndarray::ArrayD::<$t>::read_npy(npy) {
                return a.iter().map(|&v| i64::try_from(v).ok()).collect();
            })*
            None
        }};
    }
    attempt!(i64, i32, i16, i8, u64, u32, u16, u8)
}

/// The ids of a text file: integers separated by whitespace.
fn text_ids(path: &Path) -> Result<Vec<i64>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(text)
        .map_err(|_| Error::invalid(path, "is neither a .npy nor a text file of integers"))?;
    let mut ids = Vec::new();
    for (line, content) in text.lines().enumerate() {
        for word in content.split_whitespace() {
            let id = word.parse::<i64>().map_err(|_| {
                Error::invalid(
                    path,
                    format!("line {}: `{word}` is not an integer token id", line + 1),
                )
            })?;
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The token ids `spec` names: `FILE.npz:KEY` (an array of an `.npz`), `FILE.npy`, or a text
/// file. Ids keep their order and repeats.
pub fn read_ids(spec: &str) -> Result<Vec<i64>> {
    let not_integers = |path: &Path, what: &str| {
        Error::invalid(
            path,
            format!("{what} does not hold integers (token ids must be integers)"),
        )
    };
    if let Some((file, key)) = spec.rsplit_once(':').filter(|(f, _)| f.ends_with(".npz")) {
        let path = Path::new(file);
        let entries = npz_entries(path)?;
        let Some((_, npy)) = entries.iter().find(|(k, _)| k == key) else {
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            return Err(Error::invalid(
                path,
                format!("has no array `{key}` (it holds {})", keys.join(", ")),
            ));
        };
        return npy_integers(npy).ok_or_else(|| not_integers(path, &format!("array `{key}`")));
    }
    let path = Path::new(spec);
    if spec.ends_with(".npz") {
        return Err(Error::invalid(
            path,
            "name the array that holds the ids: FILE.npz:KEY",
        ));
    }
    if spec.ends_with(".npy") {
        let npy = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        check_npy_sizes(&npy).map_err(|msg| Error::invalid(path, msg))?;
        return npy_integers(&npy).ok_or_else(|| not_integers(path, "the array"));
    }
    text_ids(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_ids_are_integers_separated_by_any_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.txt");
        std::fs::write(&path, "3 1\n\n7\t2\n").unwrap();
        assert_eq!(read_ids(path.to_str().unwrap()).unwrap(), vec![3, 1, 7, 2]);
        std::fs::write(&path, "3\n1.5\n").unwrap();
        let error = read_ids(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(error.contains("line 2: `1.5` is not an integer"), "{error}");
    }
}
