//! Models split across several GGUF files, as `llama-gguf-split` writes them: `NAME-00001-of-00003.gguf`, ... Each part
//! is a GGUF of its own with `split.no` (0-based), `split.count` and, in the first, `split.tensors.count`; the metadata
//! of the model is in the first part.

use super::{Gguf, Metadata, TensorInfo};
use crate::{err, Result};
use std::collections::HashSet;

pub const KEY_NO: &str = "split.no";
pub const KEY_COUNT: &str = "split.count";
pub const KEY_TENSORS_COUNT: &str = "split.tensors.count";

/// What a split file's name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitName {
    /// Everything before `-00001-of-00003.gguf`.
    pub prefix: String,
    /// 1-based number of this part.
    pub no: u32,
    pub count: u32,
}

impl SplitName {
    /// Parses a file name or URL ending in `-NNNNN-of-MMMMM.gguf`; `None` for any other name.
    pub fn parse(name: &str) -> Option<SplitName> {
        let stem = name.strip_suffix(".gguf")?;
        let (rest, count) = stem.rsplit_once("-of-")?;
        let (prefix, no) = rest.rsplit_once('-')?;
        let five_digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
        if !five_digits(no) || !five_digits(count) {
            return None;
        }
        let (no, count) = (no.parse().ok()?, count.parse().ok()?);
        (1..=count).contains(&no).then(|| SplitName { prefix: prefix.to_string(), no, count })
    }

    /// The name of part `no` (1-based) of the same model.
    pub fn part_name(&self, no: u32) -> String {
        format!("{}-{no:05}-of-{:05}.gguf", self.prefix, self.count)
    }

    /// The names of all parts, in order.
    pub fn all_names(&self) -> Vec<String> {
        (1..=self.count).map(|no| self.part_name(no)).collect()
    }
}

impl Gguf {
    /// `(split.no, split.count)` when this file is part of a split model.
    pub fn split(&self) -> Result<Option<(u64, u64)>> {
        let no = self.metadata.get_uint(KEY_NO)?;
        let count = self.metadata.get_uint(KEY_COUNT)?;
        match (no, count) {
            (None, None) => Ok(None),
            (Some(no), Some(count)) if no < count => Ok(Some((no, count))),
            (Some(no), Some(count)) => Err(err!(GgufBadSplit, "split.no is {no} but split.count is {count}")),
            _ => Err(err!(GgufBadSplit, "a split GGUF needs both split.no and split.count")),
        }
    }
}

/// Checks that a file's name and its split metadata agree (a renamed or misnumbered part is an error).
pub fn check_split_name(file_name: &str, gguf: &Gguf) -> Result<()> {
    let named = SplitName::parse(file_name);
    match (named, gguf.split()?) {
        (None, _) => Ok(()),
        (Some(name), Some((no, count))) if u64::from(name.no) == no + 1 && u64::from(name.count) == count => Ok(()),
        (Some(name), meta) => Err(err!(
            GgufBadSplit,
            "{file_name} is named part {} of {}, but its metadata says {}",
            name.no,
            name.count,
            match meta {
                Some((no, count)) => format!("part {} of {count}", no + 1),
                None => "it is not a split file".into(),
            }
        )),
    }
}

/// A model as one or more GGUF parts; tensors are addressed by (part index, tensor info).
#[derive(Debug, Clone)]
pub struct SplitGguf {
    pub parts: Vec<Gguf>,
}

impl SplitGguf {
    /// Checks that the parts form one model: numbered 0..n in order, the same count in each, no tensor twice, and the
    /// tensor total the first part announces.
    pub fn new(parts: Vec<Gguf>) -> Result<SplitGguf> {
        let Some(first) = parts.first() else {
            return Err(err!(Usage, "a model needs at least one GGUF file"));
        };
        if first.split()?.is_none() && parts.len() == 1 {
            return Ok(SplitGguf { parts });
        }
        let n = parts.len() as u64;
        for (i, part) in parts.iter().enumerate() {
            match part.split()? {
                Some((no, count)) if no == i as u64 && count == n => {}
                Some((no, count)) => {
                    return Err(err!(
                        GgufBadSplit,
                        "file {} of {n} says it is part {} of {count}: the parts are missing, extra or out of order",
                        i + 1,
                        no + 1
                    ))
                }
                None => return Err(err!(GgufBadSplit, "file {} of {n} has no split.no / split.count", i + 1)),
            }
        }
        let mut names = HashSet::new();
        for t in parts.iter().flat_map(|p| &p.tensors) {
            if !names.insert(t.name.as_str()) {
                return Err(err!(GgufDuplicateTensor, "tensor '{}' is in more than one part", t.name));
            }
        }
        if let Some(total) = first.metadata.get_uint(KEY_TENSORS_COUNT)? {
            if total != names.len() as u64 {
                return Err(err!(
                    GgufBadSplit,
                    "split.tensors.count says {total} tensors, the parts hold {}",
                    names.len()
                ));
            }
        }
        Ok(SplitGguf { parts })
    }

    /// The model's metadata (the first part's).
    pub fn metadata(&self) -> &Metadata {
        &self.parts[0].metadata
    }

    /// Every tensor with the index of the part that holds it.
    pub fn tensors(&self) -> impl Iterator<Item = (usize, &TensorInfo)> {
        self.parts.iter().enumerate().flat_map(|(i, p)| p.tensors.iter().map(move |t| (i, t)))
    }

    pub fn tensor(&self, name: &str) -> Option<(usize, &TensorInfo)> {
        self.tensors().find(|(_, t)| t.name == name)
    }
}

/// Reads the header of a model file and, for a split model, of all its parts (which must sit beside the first, named
/// `-00002-of-0000N.gguf` and so on); returns the model and the paths of its parts.
#[cfg(not(target_arch = "wasm32"))]
pub fn open_files(path: &std::path::Path) -> Result<(SplitGguf, Vec<std::path::PathBuf>)> {
    use crate::gguf::Gguf;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let first = Gguf::read_file(path)?;
    check_split_name(name, &first)?;
    let Some(split) = SplitName::parse(name) else {
        return Ok((SplitGguf::new(vec![first])?, vec![path.to_path_buf()]));
    };
    let mut parts = vec![first];
    let mut paths = vec![path.to_path_buf()];
    for no in 2..=split.count {
        let part = path.with_file_name(split.part_name(no));
        let gguf = Gguf::read_file(&part)?;
        check_split_name(&split.part_name(no), &gguf)?;
        parts.push(gguf);
        paths.push(part);
    }
    Ok((SplitGguf::new(parts)?, paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_parse_and_expand() {
        let name = SplitName::parse("https://x/y/Model-Q4_K_M-00002-of-00003.gguf").unwrap();
        assert_eq!(name, SplitName { prefix: "https://x/y/Model-Q4_K_M".into(), no: 2, count: 3 });
        assert_eq!(name.all_names()[0], "https://x/y/Model-Q4_K_M-00001-of-00003.gguf");
        assert_eq!(name.all_names().len(), 3);
        for bad in ["m.gguf", "m-1-of-3.gguf", "m-00004-of-00003.gguf", "m-00000-of-00003.gguf", "m-00001-of-00003.bin"]
        {
            assert_eq!(SplitName::parse(bad), None, "{bad}");
        }
    }
}
