//! Paging, shared by every list of the read side (calls, unlinked events, quarantined records)
//! and by both of its edges (the HTTP API and the CLI): the page parameters a user gives (how
//! many items, after which cursor), parsed once where they arrive, and the page answered, with
//! the cursor of the next one.

use std::str::FromStr;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::event::CallKey;

/// Items on a page when no `limit` is given.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// The most items one page may hold.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// A parameter given by a user does not parse; the message names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad parameter {name}: {problem}")]
pub struct BadParameter {
    /// The parameter's name, as the user gave it.
    pub name: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// How many items a page holds at most: from 1 to [`MAX_PAGE_LIMIT`], by default
/// [`DEFAULT_PAGE_LIMIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(usize);

impl PageLimit {
    /// The limit as a count.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self(DEFAULT_PAGE_LIMIT)
    }
}

impl FromStr for PageLimit {
    type Err = BadParameter;

    fn from_str(text: &str) -> Result<Self, BadParameter> {
        text.parse()
            .ok()
            .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
            .map(Self)
            .ok_or_else(|| BadParameter {
                name: "limit",
                problem: format!("must be a whole number from 1 to {MAX_PAGE_LIMIT}"),
            })
    }
}

/// What a list's `after` names: where the previous page ended, as its `next` said.
pub trait Cursor: Sized {
    /// The cursor `text` names, or why it names none.
    fn parse_after(text: &str) -> Result<Self, BadParameter>;
}

/// The lists of calls page by call id: any id is a place in id order.
impl Cursor for CallKey {
    fn parse_after(text: &str) -> Result<Self, BadParameter> {
        Ok(CallKey::new(text))
    }
}

/// A place in a list of kept records (see `KeptRecord::position`); serialized as the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct KeptPosition(pub i64);

impl Cursor for KeptPosition {
    fn parse_after(text: &str) -> Result<Self, BadParameter> {
        text.parse().map(Self).map_err(|_| BadParameter {
            name: "after",
            problem: "must be a position given as next".to_owned(),
        })
    }
}

/// The page a user asks for: at most `limit` items, after `after` (from the start without).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageParams<C> {
    /// Most items on the page.
    pub limit: PageLimit,
    /// Where the previous page ended.
    pub after: Option<C>,
}

/// The first page, of the default limit.
impl<C> Default for PageParams<C> {
    fn default() -> Self {
        Self {
            limit: PageLimit::default(),
            after: None,
        }
    }
}

impl<C: Cursor> PageParams<C> {
    /// The page named by the `limit` and `after` parameters, each as given by a user.
    pub fn parse(limit: Option<&str>, after: Option<&str>) -> Result<Self, BadParameter> {
        Ok(Self {
            limit: limit.map(str::parse).transpose()?.unwrap_or_default(),
            after: after.map(C::parse_after).transpose()?,
        })
    }
}

/// The page parameters as a user gives them, in a query string or on a command line; see
/// [`PageQuery::parse`].
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    /// Most items on the page (1 to 1000, default 100).
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

impl PageQuery {
    /// The page these parameters name.
    pub fn parse<C: Cursor>(&self) -> Result<PageParams<C>, BadParameter> {
        PageParams::parse(self.limit.as_deref(), self.after.as_deref())
    }
}

/// An item of a list.
pub trait Listed {
    /// The key its page lists items under (`calls`, `events`, `records`).
    const ITEMS: &'static str;
    /// What the next page is asked for with.
    type Cursor: Serialize;
    /// This item's place in the list: the cursor of the page after it.
    fn cursor(&self) -> Self::Cursor;
}

/// One page of a list: its items, the cursor of the next page, and, for the lists that count
/// them, how many items the whole list holds.
///
/// Serialized as `{ITEMS: [...], "next": cursor | null}` plus `"total": N` when counted, keys
/// in alphabetical order, as these lists have always been answered.
pub struct Page<T: Listed> {
    /// The items, in list order.
    pub items: Vec<T>,
    /// Where the next page starts: set when this page is full, even if nothing follows.
    pub next: Option<T::Cursor>,
    /// Items in the whole list, for lists that count them.
    pub total: Option<i64>,
}

impl<T: Listed> Page<T> {
    /// The page of `items` read for `limit`: when it is full, the next page starts after its
    /// last item.
    pub fn new(items: Vec<T>, limit: PageLimit, total: Option<i64>) -> Self {
        let next = (items.len() == limit.get())
            .then(|| items.last().map(Listed::cursor))
            .flatten();
        Self { items, next, total }
    }
}

/// The parts of a serialized [`Page`].
enum PagePart {
    Items,
    Next,
    Total,
}

impl<T: Listed + Serialize> Serialize for Page<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut parts = vec![(T::ITEMS, PagePart::Items), ("next", PagePart::Next)];
        if self.total.is_some() {
            parts.push(("total", PagePart::Total));
        }
        parts.sort_by_key(|(key, _)| *key);
        let mut map = serializer.serialize_map(Some(parts.len()))?;
        for (key, part) in parts {
            match part {
                PagePart::Items => map.serialize_entry(key, &self.items)?,
                PagePart::Next => map.serialize_entry(key, &self.next)?,
                PagePart::Total => map.serialize_entry(key, &self.total)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_a_whole_number_from_one_to_the_maximum() {
        assert_eq!(PageLimit::default().get(), DEFAULT_PAGE_LIMIT);
        assert_eq!("1".parse::<PageLimit>().map(PageLimit::get), Ok(1));
        let most = MAX_PAGE_LIMIT.to_string().parse::<PageLimit>();
        assert_eq!(most.map(PageLimit::get), Ok(MAX_PAGE_LIMIT));
        for refused in ["0", "1001", "-1", "ten", ""] {
            let error = refused.parse::<PageLimit>().expect_err(refused);
            assert_eq!(error.name, "limit", "{refused}");
        }
    }

    #[test]
    fn page_parameters_default_to_the_first_page_of_the_default_limit() {
        let page = PageParams::<KeptPosition>::parse(None, None).expect("no parameters");
        assert_eq!(page, PageParams::default());
        let page = PageParams::<KeptPosition>::parse(Some("2"), Some("7")).expect("both");
        assert_eq!((page.limit.get(), page.after), (2, Some(KeptPosition(7))));
        let error = PageParams::<KeptPosition>::parse(None, Some("x")).expect_err("a position");
        assert_eq!(error.name, "after");
    }
}
