//! A small backtracking matcher for the `pattern` of OpenAPI schemas (kube-openapi uses Go's RE2 syntax and an
//! unanchored match). Supported: literals, `.`, classes `[a-z0-9_-]` / `[^…]` with `\d \w \s` and POSIX `[:alpha:]`
//! names, escapes `\d \D \w \W \s \S \b \B \A \z \. \n \t \r \xHH \x{…}`, anchors `^ $`, groups `(…)`, `(?:…)`,
//! `(?P<n>…)`, `(?<n>…)`, alternation, quantifiers `* + ? {n} {n,} {n,m}` (greedy or lazy) and a leading `(?i)`.
//! Anything else makes `Regex::new` return None: the pattern is then not checked.

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class(Vec<(char, char)>, bool),
    Start,
    End,
    WordBoundary(bool),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat(Box<Node>, usize, Option<usize>),
}

#[derive(Debug, Clone)]
pub struct Regex {
    node: Node,
    icase: bool,
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
const SPACE: &[(char, char)] = &[('\t', '\n'), ('\u{c}', '\r'), (' ', ' ')];

fn negate(ranges: &[(char, char)]) -> Vec<(char, char)> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut out = Vec::new();
    let mut next = 0u32;
    for (a, b) in sorted {
        if (a as u32) > next {
            if let (Some(x), Some(y)) = (char::from_u32(next), char::from_u32(a as u32 - 1)) {
                out.push((x, y));
            }
        }
        next = next.max(b as u32 + 1);
    }
    if next <= 0x10FFFF {
        out.push((char::from_u32(next).unwrap_or('\u{10FFFF}'), '\u{10FFFF}'));
    }
    out
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn alt(&mut self) -> Option<Node> {
        let mut branches = vec![self.concat()?];
        while self.peek() == Some('|') {
            self.i += 1;
            branches.push(self.concat()?);
        }
        Some(if branches.len() == 1 {
            branches.pop()?
        } else {
            Node::Alt(branches)
        })
    }

    fn concat(&mut self) -> Option<Node> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Some(Node::Concat(items))
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.s[start..self.i]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
    }

    fn quantified(&mut self, atom: Node) -> Option<Node> {
        let mut node = atom;
        loop {
            let (min, max) = match self.peek() {
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('?') => (0, Some(1)),
                Some('{') => {
                    let save = self.i;
                    self.i += 1;
                    let Some(min) = self.number() else {
                        self.i = save;
                        return Some(node);
                    };
                    let max = if self.peek() == Some(',') {
                        self.i += 1;
                        if self.peek() == Some('}') {
                            None
                        } else {
                            Some(self.number()?)
                        }
                    } else {
                        Some(min)
                    };
                    if self.peek() != Some('}') {
                        return None;
                    }
                    (min, max)
                }
                _ => return Some(node),
            };
            self.i += 1;
            if self.peek() == Some('?') {
                self.i += 1;
            }
            node = Node::Repeat(Box::new(node), min, max);
        }
    }

    fn escape_class(c: char) -> Option<Vec<(char, char)>> {
        Some(match c {
            'd' => DIGIT.to_vec(),
            'D' => negate(DIGIT),
            'w' => WORD.to_vec(),
            'W' => negate(WORD),
            's' => SPACE.to_vec(),
            'S' => negate(SPACE),
            _ => return None,
        })
    }

    fn escaped_char(&mut self, c: char) -> Option<char> {
        match c {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            'f' => Some('\u{c}'),
            'v' => Some('\u{b}'),
            'x' => {
                let hex: String = if self.peek() == Some('{') {
                    self.i += 1;
                    let start = self.i;
                    while self.peek().is_some_and(|c| c != '}') {
                        self.i += 1;
                    }
                    let h = self.s[start..self.i].iter().collect();
                    self.i += 1;
                    h
                } else {
                    let h = self.s.get(self.i..self.i + 2)?.iter().collect();
                    self.i += 2;
                    h
                };
                char::from_u32(u32::from_str_radix(&hex, 16).ok()?)
            }
            c if c.is_ascii_punctuation() => Some(c),
            _ => None,
        }
    }

    fn atom(&mut self) -> Option<Node> {
        let c = self.peek()?;
        self.i += 1;
        Some(match c {
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                if self.peek() == Some('?') {
                    self.i += 1;
                    match self.peek()? {
                        ':' => self.i += 1,
                        'P' | '<' => {
                            while self.peek()? != '>' {
                                self.i += 1;
                            }
                            self.i += 1;
                        }
                        _ => return None,
                    }
                }
                let inner = self.alt()?;
                if self.peek() != Some(')') {
                    return None;
                }
                self.i += 1;
                inner
            }
            '[' => self.class()?,
            '\\' => {
                let e = self.peek()?;
                self.i += 1;
                match e {
                    'A' => Node::Start,
                    'z' => Node::End,
                    'b' => Node::WordBoundary(true),
                    'B' => Node::WordBoundary(false),
                    _ => match Self::escape_class(e) {
                        Some(r) => Node::Class(r, false),
                        None => Node::Char(self.escaped_char(e)?),
                    },
                }
            }
            '*' | '+' | '?' | ')' => return None,
            c => Node::Char(c),
        })
    }

    fn class(&mut self) -> Option<Node> {
        let mut negated = false;
        if self.peek() == Some('^') {
            negated = true;
            self.i += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek()?;
            self.i += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = match c {
                '[' if self.peek() == Some(':') => {
                    let start = self.i + 1;
                    let end = (start..self.s.len()).find(|&j| self.s[j] == ':')?;
                    let name: String = self.s[start..end].iter().collect();
                    if self.s.get(end + 1) != Some(&']') {
                        return None;
                    }
                    self.i = end + 2;
                    ranges.extend_from_slice(match name.as_str() {
                        "alpha" => &[('A', 'Z'), ('a', 'z')][..],
                        "digit" => DIGIT,
                        "alnum" => &[('0', '9'), ('A', 'Z'), ('a', 'z')][..],
                        "upper" => &[('A', 'Z')][..],
                        "lower" => &[('a', 'z')][..],
                        "space" => &[('\t', '\r'), (' ', ' ')][..],
                        "xdigit" => &[('0', '9'), ('A', 'F'), ('a', 'f')][..],
                        "word" => WORD,
                        _ => return None,
                    });
                    continue;
                }
                '\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    if let Some(r) = Self::escape_class(e) {
                        ranges.extend(r);
                        continue;
                    }
                    self.escaped_char(e)?
                }
                c => c,
            };
            if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|&c| c != ']') {
                self.i += 1;
                let mut hi = self.peek()?;
                self.i += 1;
                if hi == '\\' {
                    let e = self.peek()?;
                    self.i += 1;
                    hi = self.escaped_char(e)?;
                }
                if hi < lo {
                    return None;
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Some(Node::Class(ranges, negated))
    }
}

fn is_word(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
}

struct Matcher<'a> {
    text: &'a [char],
    icase: bool,
    budget: usize,
}

impl Matcher<'_> {
    fn char_eq(&self, a: char, b: char) -> bool {
        a == b || (self.icase && a.to_lowercase().eq(b.to_lowercase()))
    }

    fn in_class(&self, ranges: &[(char, char)], c: char) -> bool {
        let hit = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        hit(c) || (self.icase && (c.to_lowercase().any(hit) || c.to_uppercase().any(hit)))
    }

    /// Matches `nodes` in sequence from `pos`, then calls `k`.
    fn seq(
        &mut self,
        nodes: &[Node],
        pos: usize,
        k: &mut dyn FnMut(&mut Self, usize) -> bool,
    ) -> bool {
        if self.budget == 0 {
            return true;
        }
        self.budget -= 1;
        let Some((first, rest)) = nodes.split_first() else {
            return k(self, pos);
        };
        self.one(first, pos, &mut |m, p| m.seq(rest, p, k))
    }

    fn one(
        &mut self,
        node: &Node,
        pos: usize,
        k: &mut dyn FnMut(&mut Self, usize) -> bool,
    ) -> bool {
        let t = self.text;
        match node {
            Node::Char(c) => t.get(pos).is_some_and(|&x| self.char_eq(x, *c)) && k(self, pos + 1),
            Node::Any => t.get(pos).is_some_and(|&x| x != '\n') && k(self, pos + 1),
            Node::Class(r, neg) => {
                t.get(pos).is_some_and(|&x| self.in_class(r, x) != *neg) && k(self, pos + 1)
            }
            Node::Start => pos == 0 && k(self, pos),
            Node::End => pos == t.len() && k(self, pos),
            Node::WordBoundary(want) => {
                let at = is_word(t.get(pos)) != is_word(pos.checked_sub(1).and_then(|p| t.get(p)));
                at == *want && k(self, pos)
            }
            Node::Concat(items) => self.seq(items, pos, k),
            Node::Alt(branches) => branches.iter().any(|b| self.one(b, pos, k)),
            Node::Repeat(inner, min, max) => self.repeat(inner, *min, *max, 0, pos, k),
        }
    }

    fn repeat(
        &mut self,
        inner: &Node,
        min: usize,
        max: Option<usize>,
        count: usize,
        pos: usize,
        k: &mut dyn FnMut(&mut Self, usize) -> bool,
    ) -> bool {
        if self.budget == 0 {
            return true;
        }
        self.budget -= 1;
        if max.is_none_or(|m| count < m) {
            let more = self.one(inner, pos, &mut |m, p| {
                // An iteration that consumed nothing cannot help further ones.
                if p == pos && count >= min {
                    return false;
                }
                m.repeat(inner, min, max, count + 1, p, k)
            });
            if more {
                return true;
            }
        }
        count >= min && k(self, pos)
    }
}

impl Regex {
    pub fn new(pattern: &str) -> Option<Regex> {
        let (icase, body) = match pattern.strip_prefix("(?i)") {
            Some(b) => (true, b),
            None => (false, pattern),
        };
        let chars: Vec<char> = body.chars().collect();
        let mut p = Parser { s: &chars, i: 0 };
        let node = p.alt()?;
        (p.i == chars.len()).then_some(Regex { node, icase })
    }

    /// Whether the pattern matches somewhere in `text` (Go's `MatchString`). A match that needs too many steps
    /// counts as a match.
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let mut m = Matcher {
            text: &chars,
            icase: self.icase,
            budget: 200_000,
        };
        (0..=chars.len()).any(|start| m.one(&self.node, start, &mut |_, _| true))
    }
}

#[cfg(test)]
mod tests {
    use super::Regex;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p)
            .unwrap_or_else(|| panic!("{p} parses"))
            .is_match(t)
    }

    #[test]
    fn go_like_matching() {
        assert!(m("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "eth-0"));
        assert!(!m("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "eth-"));
        assert!(m("^(\\d{1,3}\\.){3}\\d{1,3}$", "10.0.0.1"));
        assert!(!m("^(\\d{1,3}\\.){3}\\d{1,3}$", "10.0.0"));
        assert!(m("b+", "abbc"), "unanchored");
        assert!(m("^(ens|eth)[0-9]+$", "ens192"));
        assert!(!m("^(ens|eth)[0-9]+$", "wlan0"));
        assert!(m("(?i)^ABC$", "abc"));
        assert!(m("^[^:]+$", "abc") && !m("^[^:]+$", "a:b"));
        assert!(m("^[[:alpha:]]+\\b", "abc def"));
        assert!(m("^a{2,}$", "aaa") && !m("^a{2,}$", "a"));
        assert!(m("^(a*)*$", "aaaa"));
        assert!(m("^$", ""));
        assert!(Regex::new("(unclosed").is_none());
        assert!(Regex::new("\\p{L}").is_none());
    }
}
