//! The Dockerfile language: parsing a Dockerfile's text into instructions (parser directives,
//! comments, line continuations, keywords, flags, JSON or text arguments), and the Docker-style
//! word rules the builder applies to instruction arguments (quote removal, escapes and `$VAR` /
//! `${VAR...}` expansion, `key=value` pairs).
//!
//! It only reads text: what an instruction does to an image is the builder's business.

/// A Dockerfile instruction's keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    From,
    Run,
    Cmd,
    Entrypoint,
    Copy,
    Add,
    Env,
    Arg,
    Workdir,
    User,
    Expose,
    Label,
    Volume,
    Stopsignal,
    Healthcheck,
    Shell,
    Maintainer,
    Onbuild,
}

const KEYWORDS: [Keyword; 18] = [
    Keyword::From,
    Keyword::Run,
    Keyword::Cmd,
    Keyword::Entrypoint,
    Keyword::Copy,
    Keyword::Add,
    Keyword::Env,
    Keyword::Arg,
    Keyword::Workdir,
    Keyword::User,
    Keyword::Expose,
    Keyword::Label,
    Keyword::Volume,
    Keyword::Stopsignal,
    Keyword::Healthcheck,
    Keyword::Shell,
    Keyword::Maintainer,
    Keyword::Onbuild,
];

impl Keyword {
    /// The keyword as Docker writes it, upper case: "FROM", "RUN", ...
    pub fn name(self) -> &'static str {
        match self {
            Keyword::From => "FROM",
            Keyword::Run => "RUN",
            Keyword::Cmd => "CMD",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Copy => "COPY",
            Keyword::Add => "ADD",
            Keyword::Env => "ENV",
            Keyword::Arg => "ARG",
            Keyword::Workdir => "WORKDIR",
            Keyword::User => "USER",
            Keyword::Expose => "EXPOSE",
            Keyword::Label => "LABEL",
            Keyword::Volume => "VOLUME",
            Keyword::Stopsignal => "STOPSIGNAL",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Shell => "SHELL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Onbuild => "ONBUILD",
        }
    }

    /// The keyword written `word`, in any case.
    fn from_word(word: &str) -> Option<Keyword> {
        KEYWORDS
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(word))
    }

    /// Whether leading `--name=value` words are flags (for the others they are argument text).
    fn takes_flags(self) -> bool {
        matches!(
            self,
            Keyword::From | Keyword::Run | Keyword::Copy | Keyword::Add | Keyword::Healthcheck
        )
    }

    /// Whether the arguments may be a JSON array of strings.
    fn json_form(self) -> bool {
        matches!(
            self,
            Keyword::Run
                | Keyword::Cmd
                | Keyword::Entrypoint
                | Keyword::Shell
                | Keyword::Copy
                | Keyword::Add
                | Keyword::Volume
        )
    }
}

/// An instruction's arguments: the JSON ("exec") form, or text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    Json(Vec<String>),
    Text(String),
}

/// One instruction of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The 1-based line number where the instruction starts.
    pub line: usize,
    pub keyword: Keyword,
    /// Leading `--name=value` words (`--name` alone has the value "true"), in order, the name
    /// without the dashes. Only FROM, RUN, COPY, ADD and HEALTHCHECK take flags.
    pub flags: Vec<(String, String)>,
    /// The rest after the flags.
    pub args: Args,
    /// The instruction as written, continuation lines joined (comment lines inside dropped),
    /// trimmed.
    pub original: String,
}

/// A parsed Dockerfile: its escape character and its instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

fn error(line: usize, reason: impl Into<String>) -> ParseError {
    ParseError {
        line,
        reason: reason.into(),
    }
}

/// Parses a Dockerfile's text.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let (escape, body) = directives(&lines)?;

    let mut instructions = Vec::new();
    // The instruction being joined from continuation lines: its first line and its text so far.
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in lines.iter().enumerate().skip(body) {
        let number = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (content, continues) = match raw.trim_end().strip_suffix(escape) {
            Some(before) => (before, true),
            None => (*raw, false),
        };
        let (start, mut joined) = match pending.take() {
            Some((start, joined)) if !joined.trim().is_empty() => (start, joined),
            _ => (number, String::new()),
        };
        joined.push_str(content);
        if continues {
            pending = Some((start, joined));
        } else {
            instructions.push(instruction(start, &joined)?);
        }
    }
    if let Some((start, joined)) = pending
        && !joined.trim().is_empty()
    {
        instructions.push(instruction(start, &joined)?);
    }

    if instructions.is_empty() {
        return Err(error(1, "the Dockerfile has no instructions"));
    }
    for i in &instructions {
        match i.keyword {
            Keyword::From => break,
            Keyword::Arg => {}
            other => {
                return Err(error(
                    i.line,
                    format!(
                        "the first instruction must be FROM (or ARG before it), not {}",
                        other.name()
                    ),
                ));
            }
        }
    }
    Ok(Parsed {
        escape,
        instructions,
    })
}

/// Reads the parser directives at the top: the escape character, and the index of the first line
/// after them.
fn directives(lines: &[&str]) -> Result<(char, usize), ParseError> {
    let mut escape = None;
    let mut syntax = false;
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        let Some((key, value)) = directive(line) else {
            return Ok((escape.unwrap_or('\\'), index));
        };
        match key.to_ascii_lowercase().as_str() {
            "escape" => {
                if escape.is_some() {
                    return Err(error(number, "the escape directive is given twice"));
                }
                escape = Some(match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(error(
                            number,
                            format!("invalid escape character {value:?}: it must be \\ or `"),
                        ));
                    }
                });
            }
            "syntax" => {
                if syntax {
                    return Err(error(number, "the syntax directive is given twice"));
                }
                syntax = true;
            }
            // An unknown directive is a comment, and so ends the directives.
            _ => return Ok((escape.unwrap_or('\\'), index)),
        }
    }
    Ok((escape.unwrap_or('\\'), lines.len()))
}

/// `# key=value`, with a key of letters and digits (starting with a letter) and a value that is
/// not empty: the key and the value, both trimmed.
fn directive(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.trim().strip_prefix('#')?.split_once('=')?;
    let key = key.trim();
    let value = value.trim();
    let mut chars = key.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric()) || value.is_empty() {
        return None;
    }
    Some((key, value))
}

/// The first word of `text` (up to whitespace) and the rest, as is.
fn first_word(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    }
}

/// One instruction from its text, continuation lines joined.
fn instruction(line: usize, joined: &str) -> Result<Instruction, ParseError> {
    let original = joined.trim().to_string();
    let (word, rest) = first_word(&original);
    let keyword = Keyword::from_word(word).ok_or_else(|| {
        error(
            line,
            format!("unknown instruction: {}", word.to_uppercase()),
        )
    })?;
    let needs_arguments = || error(line, format!("{} needs arguments", keyword.name()));

    let mut rest = rest.trim_start();
    let mut flags = Vec::new();
    if keyword.takes_flags() {
        loop {
            let (word, after) = first_word(rest);
            let Some(flag) = word.strip_prefix("--") else {
                break;
            };
            rest = after.trim_start();
            if flag.is_empty() {
                // A lone `--` ends the flags.
                break;
            }
            let (name, value) = flag.split_once('=').unwrap_or((flag, "true"));
            if name.is_empty() {
                return Err(error(line, format!("bad flag: {word}")));
            }
            flags.push((name.to_string(), value.to_string()));
        }
    }

    let rest = rest.trim();
    if rest.is_empty() {
        return Err(needs_arguments());
    }
    let args = if keyword.json_form() {
        command_form(rest)
    } else {
        Args::Text(rest.to_string())
    };
    if keyword == Keyword::Shell {
        match &args {
            Args::Json(words) if words.is_empty() => {
                return Err(error(line, "SHELL needs at least the shell's path"));
            }
            Args::Json(_) => {}
            Args::Text(_) => {
                return Err(error(
                    line,
                    "SHELL needs the JSON form, as in SHELL [\"/bin/sh\", \"-c\"]",
                ));
            }
        }
    }
    Ok(Instruction {
        line,
        keyword,
        flags,
        args,
        original,
    })
}

/// `Args::Json` when `text` is a valid JSON array of strings, else `Args::Text(text.trim())`.
pub fn command_form(text: &str) -> Args {
    let text = text.trim();
    if text.starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(text)
    {
        return Args::Json(words);
    }
    Args::Text(text.to_string())
}

/// One word with quotes removed and `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`,
/// `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}` expanded (lookup gives a variable's value; None =
/// unset). No splitting: spaces stay. Errors (a String naming the problem) for an unterminated
/// quote, an unterminated `${`, a bad `${...}` form, and `${VAR:?msg}` / `${VAR?msg}` with VAR
/// unset/empty (message includes msg).
pub fn expand_word(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut words = Lexer::new(text, escape, lookup).words(false)?;
    Ok(words.pop().unwrap_or_default())
}

/// Splits on unquoted whitespace into words, each processed like [`expand_word`] (a quoted empty
/// string "" is a word; expansion results are NOT re-split on spaces).
pub fn expand_words(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    Lexer::new(text, escape, lookup).words(true)
}

/// ENV / LABEL / ARG arguments: `k=v k2="v 2"` pairs (each value expanded like [`expand_word`];
/// keys expanded too), or the legacy single form `KEY value with spaces` (only when the first word
/// has no `=` and more words follow: the rest of the line, trimmed, expanded as one word, is the
/// value). A word without `=` (alone, or among pairs) means "declared, no value" (ARG): its value
/// is None; for ENV/LABEL the caller rejects that. An empty key or `=value` alone is an error.
pub fn key_values(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Option<String>)>, String> {
    let words = raw_words(text, escape);
    let Some(&(first_start, first_end)) = words.first() else {
        return Err("no key given".to_string());
    };
    let key = |word: &str| -> Result<String, String> {
        let key = expand_word(word, escape, lookup)?;
        if key.is_empty() {
            return Err(format!("a key is missing in {:?}", text.trim()));
        }
        Ok(key)
    };
    let first = &text[first_start..first_end];
    if !first.contains('=') {
        let name = key(first)?;
        if words.len() == 1 {
            return Ok(vec![(name, None)]);
        }
        let value = expand_word(text[first_end..].trim(), escape, lookup)?;
        return Ok(vec![(name, Some(value))]);
    }
    words
        .iter()
        .map(|&(start, end)| {
            let word = &text[start..end];
            match word.split_once('=') {
                Some((k, v)) => Ok((key(k)?, Some(expand_word(v, escape, lookup)?))),
                None => Ok((key(word)?, None)),
            }
        })
        .collect()
}

/// The byte ranges of `text`'s words, split at whitespace outside quotes and outside `${...}`,
/// nothing removed or expanded (an unterminated quote runs to the end; expansion reports it).
fn raw_words(text: &str, escape: char) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<char> = None;
    let mut braces = 0usize;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                }
            }
            Some(_) => {
                if c == escape {
                    chars.next();
                } else if c == '"' {
                    quote = None;
                }
            }
            None => {
                if c.is_whitespace() && braces == 0 {
                    if let Some(s) = start.take() {
                        words.push((s, i));
                    }
                    continue;
                }
                if start.is_none() {
                    start = Some(i);
                }
                if c == escape {
                    chars.next();
                } else if c == '\'' || c == '"' {
                    quote = Some(c);
                } else if c == '$' && chars.peek().is_some_and(|&(_, n)| n == '{') {
                    chars.next();
                    braces += 1;
                } else if c == '}' && braces > 0 {
                    braces -= 1;
                }
            }
        }
    }
    if let Some(s) = start {
        words.push((s, text.len()));
    }
    words
}

/// The word rules over one text: quotes, escapes and `$` expansion.
struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

const UNTERMINATED_BRACE: &str = "unterminated ${: no closing }";

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, lookup: &'a dyn Fn(&str) -> Option<String>) -> Lexer<'a> {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            lookup,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_next(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }

    /// The whole text: split at unquoted whitespace into words when `split`, else as one word.
    fn words(&mut self, split: bool) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        while let Some(c) = self.peek() {
            if split && c.is_whitespace() {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                self.pos += 1;
            } else if c == self.escape {
                // The next character is literal; an escape character at the end stays.
                word.push(self.peek_next().unwrap_or(c));
                self.pos += 2;
                in_word = true;
            } else if c == '\'' {
                self.pos += 1;
                self.single_quoted(&mut word)?;
                in_word = true;
            } else if c == '"' {
                self.pos += 1;
                self.double_quoted(&mut word, true)?;
                in_word = true;
            } else if c == '$' {
                let value = self.dollar(false, true)?;
                // An unquoted expansion to nothing makes no word of its own.
                in_word |= !value.is_empty();
                word.push_str(&value);
            } else {
                word.push(c);
                self.pos += 1;
                in_word = true;
            }
        }
        if in_word || !split {
            words.push(word);
        }
        Ok(words)
    }

    /// After an opening `'`: everything literal up to the closing one.
    fn single_quoted(&mut self, out: &mut String) -> Result<(), String> {
        loop {
            match self.peek() {
                None => return Err("unterminated single quote".to_string()),
                Some('\'') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// After an opening `"`: `$` expands; the escape character escapes only `"`, `$` and itself.
    fn double_quoted(&mut self, out: &mut String, eval: bool) -> Result<(), String> {
        loop {
            match self.peek() {
                None => return Err("unterminated double quote".to_string()),
                Some('"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('$') => {
                    let value = self.dollar(true, eval)?;
                    out.push_str(&value);
                }
                Some(c) if c == self.escape => match self.peek_next() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        out.push(n);
                        self.pos += 2;
                    }
                    _ => {
                        out.push(c);
                        self.pos += 1;
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// At a `$`: a variable's value, or a literal `$`. `quoted` when inside double quotes;
    /// `eval` false when the result is not used (then `${VAR?msg}` does not fail).
    fn dollar(&mut self, quoted: bool, eval: bool) -> Result<String, String> {
        match self.peek_next() {
            Some('{') => {
                self.pos += 2;
                self.braced(quoted, eval)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                self.pos += 1;
                let name = self.name();
                Ok((self.lookup)(&name).unwrap_or_default())
            }
            _ => {
                self.pos += 1;
                Ok("$".to_string())
            }
        }
    }

    /// A run of `[A-Za-z0-9_]`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// After `${`: the name, the operator if any, its word, up to the closing `}`.
    fn braced(&mut self, quoted: bool, eval: bool) -> Result<String, String> {
        let start = self.pos.saturating_sub(2);
        let name = self.name();
        let bad = |lexer: &Lexer| {
            let end = (lexer.pos + 1).min(lexer.chars.len());
            let written: String = lexer.chars[start..end].iter().collect();
            format!("bad substitution: {written}")
        };
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(match self.peek() {
                None => UNTERMINATED_BRACE.to_string(),
                Some(_) => bad(self),
            });
        }
        let value = (self.lookup)(&name);
        let colon = match self.peek() {
            None => return Err(UNTERMINATED_BRACE.to_string()),
            Some('}') => {
                self.pos += 1;
                return Ok(value.unwrap_or_default());
            }
            Some(':') => {
                self.pos += 1;
                true
            }
            Some(_) => false,
        };
        let op = match self.peek() {
            None => return Err(UNTERMINATED_BRACE.to_string()),
            Some(op @ ('-' | '+' | '?')) => op,
            Some(_) => return Err(bad(self)),
        };
        self.pos += 1;
        // Set (`-`, `+`, `?`), or set and not empty (with the colon).
        let present = match &value {
            Some(v) => !colon || !v.is_empty(),
            None => false,
        };
        match op {
            '-' => {
                let word = self.brace_word(quoted, eval && !present)?;
                Ok(if present {
                    value.unwrap_or_default()
                } else {
                    word
                })
            }
            '+' => {
                let word = self.brace_word(quoted, eval && present)?;
                Ok(if present { word } else { String::new() })
            }
            _ => {
                let message = self.brace_word(quoted, eval && !present)?;
                if present {
                    Ok(value.unwrap_or_default())
                } else if !eval {
                    Ok(String::new())
                } else if message.is_empty() {
                    Err(if colon {
                        format!("{name}: is not set or is empty")
                    } else {
                        format!("{name}: is not set")
                    })
                } else {
                    Err(format!("{name}: {message}"))
                }
            }
        }
    }

    /// The word of `${VAR:-word}` and the like, expanded, up to and past the closing `}`.
    fn brace_word(&mut self, quoted: bool, eval: bool) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(UNTERMINATED_BRACE.to_string()),
                Some('}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar(quoted, eval)?;
                    out.push_str(&value);
                }
                Some('"') => {
                    self.pos += 1;
                    self.double_quoted(&mut out, eval)?;
                }
                Some('\'') if !quoted => {
                    self.pos += 1;
                    self.single_quoted(&mut out)?;
                }
                Some(c) if c == self.escape => match self.peek_next() {
                    Some(n) if !quoted || matches!(n, '"' | '$' | '}') || n == self.escape => {
                        out.push(n);
                        self.pos += 2;
                    }
                    _ => {
                        out.push(c);
                        self.pos += 1;
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/root".to_string()),
            "A" => Some("a".to_string()),
            "B" => Some("b".to_string()),
            "EMPTY" => Some(String::new()),
            "SPACED" => Some("x  y".to_string()),
            _ => None,
        }
    }

    fn word(text: &str) -> Result<String, String> {
        expand_word(text, '\\', &vars)
    }

    fn words(text: &str) -> Result<Vec<String>, String> {
        expand_words(text, '\\', &vars)
    }

    fn pairs(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
        key_values(text, '\\', &vars)
    }

    fn pair(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_string(), v.map(str::to_string))
    }

    fn text(s: &str) -> Args {
        Args::Text(s.to_string())
    }

    fn json(items: &[&str]) -> Args {
        Args::Json(items.iter().map(|s| s.to_string()).collect())
    }

    fn flag(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    fn parse_err(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    // ---- parser directives ----

    #[test]
    fn the_escape_directive_sets_backtick_for_paths_and_continuations() {
        let p = parse(
            "# escape=`\n\nFROM mcr.microsoft.com/windows/servercore\nCOPY testfile.txt C:\\\nRUN dir C:\\ `\n    /b\nWORKDIR C:\\app\\\n",
        )
        .unwrap();
        assert_eq!(p.escape, '`');
        let i = &p.instructions;
        assert_eq!(i.len(), 4);
        assert_eq!(i[1].args, text("testfile.txt C:\\"));
        assert_eq!(i[2].original, "RUN dir C:\\     /b");
        assert_eq!(i[2].args, text("dir C:\\     /b"));
        assert_eq!(i[2].line, 5);
        assert_eq!(i[3].keyword, Keyword::Workdir);
        assert_eq!(i[3].args, text("C:\\app\\"));
        assert_eq!(i[3].line, 7);
    }

    #[test]
    fn directives_take_any_case_and_spaces_around_the_equals_sign() {
        let p = parse("#  ESCAPE = `\nFROM a\n").unwrap();
        assert_eq!(p.escape, '`');
        let p = parse("#escape=\\\nFROM a\n").unwrap();
        assert_eq!(p.escape, '\\');
    }

    #[test]
    fn the_default_escape_is_backslash() {
        let p = parse("FROM a\nRUN echo a \\\n  b\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert_eq!(p.instructions[1].original, "RUN echo a   b");
    }

    #[test]
    fn the_syntax_directive_is_accepted_and_ignored() {
        let p = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(p.escape, '`');
        assert_eq!(p.instructions.len(), 1);
        assert_eq!(p.instructions[0].line, 3);
    }

    #[test]
    fn a_directive_after_a_comment_or_a_blank_line_is_a_comment() {
        let p = parse("# a comment\n# escape=`\nFROM a\nRUN x \\\n y\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert_eq!(p.instructions[1].original, "RUN x  y");
        let p = parse("\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(p.escape, '\\');
        let p = parse("FROM a\n# escape=`\nRUN x\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert_eq!(p.instructions.len(), 2);
    }

    #[test]
    fn a_bad_escape_value_is_an_error() {
        let e = parse_err("# escape=x\nFROM a\n");
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("escape"), "{e}");
        let e = parse_err("# syntax=x\n# escape=\\\\\nFROM a\n");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn a_repeated_directive_is_an_error() {
        let e = parse_err("# escape=\\\n# escape=`\nFROM a\n");
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("twice"), "{e}");
        let e = parse_err("# syntax=a\n# Syntax=b\nFROM a\n");
        assert_eq!(e.line, 2);
    }

    // ---- lines ----

    #[test]
    fn comment_lines_inside_a_continuation_are_dropped() {
        let p = parse("FROM a\nRUN apt-get update && \\\n# install things\n    apt-get install x \\\n   # more\n    y\nUSER me\n").unwrap();
        let run = &p.instructions[1];
        assert_eq!(
            run.original,
            "RUN apt-get update &&     apt-get install x     y"
        );
        assert_eq!(run.line, 2);
        assert_eq!(p.instructions[2].line, 7);
    }

    #[test]
    fn a_hash_inside_a_line_is_not_a_comment() {
        let p = parse("FROM a\nRUN echo a # b\n").unwrap();
        assert_eq!(p.instructions[1].args, text("echo a # b"));
    }

    #[test]
    fn blank_lines_are_skipped_also_inside_a_continuation() {
        let p = parse("\n\nFROM a\n\n   \nRUN a \\\n\n  \t\n b\n\nUSER x").unwrap();
        let i = &p.instructions;
        assert_eq!(i.len(), 3);
        assert_eq!(i[0].line, 3);
        assert_eq!(i[1].line, 6);
        assert_eq!(i[1].original, "RUN a  b");
        assert_eq!(i[2].line, 11);
    }

    #[test]
    fn a_continuation_at_the_end_of_the_file_ends_the_instruction() {
        let p = parse("FROM a\nRUN echo x \\").unwrap();
        assert_eq!(p.instructions[1].original, "RUN echo x");
        assert_eq!(p.instructions[1].args, text("echo x"));
        let p = parse("FROM a\nRUN echo x \\\n\n# c\n").unwrap();
        assert_eq!(p.instructions[1].args, text("echo x"));
    }

    #[test]
    fn crlf_line_endings_and_a_bom_are_handled() {
        let p = parse("\u{feff}# escape=`\r\nFROM a\r\nRUN echo a `\r\n  b\r\nCMD [\"x\"]\r\n")
            .unwrap();
        assert_eq!(p.escape, '`');
        let i = &p.instructions;
        assert_eq!(i[0].args, text("a"));
        assert_eq!(i[1].original, "RUN echo a   b");
        assert_eq!(i[2].args, json(&["x"]));
        assert_eq!(i[2].line, 5);
    }

    #[test]
    fn keywords_are_case_insensitive_and_original_keeps_them_as_written() {
        let p = parse("from alpine AS base\nrun echo hi\nCoPy a b\n").unwrap();
        let i = &p.instructions;
        assert_eq!(i[0].keyword, Keyword::From);
        assert_eq!(i[0].args, text("alpine AS base"));
        assert_eq!(i[1].keyword, Keyword::Run);
        assert_eq!(i[1].original, "run echo hi");
        assert_eq!(i[2].keyword, Keyword::Copy);
    }

    #[test]
    fn instructions_after_multi_line_ones_have_their_own_line_numbers() {
        let p =
            parse("FROM a\nRUN a \\\n  b \\\n  c\n\nENV X=1\nCMD \\\n [\"a\"]\nEXPOSE 80").unwrap();
        let lines: Vec<usize> = p.instructions.iter().map(|i| i.line).collect();
        assert_eq!(lines, [1, 2, 6, 7, 9]);
        assert_eq!(p.instructions[3].args, json(&["a"]));
    }

    #[test]
    fn an_unknown_instruction_is_an_error_at_its_line() {
        let e = parse_err("FROM a\nRUN x \\\n y\nfoo bar\n");
        assert_eq!(
            e,
            ParseError {
                line: 4,
                reason: "unknown instruction: FOO".to_string()
            }
        );
        assert_eq!(e.to_string(), "Dockerfile line 4: unknown instruction: FOO");
    }

    #[test]
    fn an_instruction_without_arguments_is_an_error() {
        let e = parse_err("FROM a\n\nRUN   \n");
        assert_eq!(e.line, 3);
        assert_eq!(e.reason, "RUN needs arguments");
        let e = parse_err("from\n");
        assert_eq!(e.reason, "FROM needs arguments");
        let e = parse_err("FROM a\nCOPY --from=b\n");
        assert_eq!(e.reason, "COPY needs arguments");
    }

    #[test]
    fn an_empty_dockerfile_is_an_error() {
        let empty = ParseError {
            line: 1,
            reason: "the Dockerfile has no instructions".to_string(),
        };
        assert_eq!(parse_err(""), empty);
        assert_eq!(parse_err("# syntax=x\n\n# only a comment\n  \n"), empty);
    }

    // ---- flags and arguments ----

    #[test]
    fn flags_are_the_leading_double_dash_words() {
        let p =
            parse("FROM --platform=linux/amd64 a\nCOPY --from=a --chown=1:2 --link src/ /dst/\n")
                .unwrap();
        assert_eq!(p.instructions[0].flags, [flag("platform", "linux/amd64")]);
        let copy = &p.instructions[1];
        assert_eq!(
            copy.flags,
            [
                flag("from", "a"),
                flag("chown", "1:2"),
                flag("link", "true")
            ]
        );
        assert_eq!(copy.args, text("src/ /dst/"));
        assert_eq!(copy.original, "COPY --from=a --chown=1:2 --link src/ /dst/");
    }

    #[test]
    fn flags_stop_at_the_first_other_word() {
        let p = parse("FROM a\nRUN --mount=type=cache,target=/c echo --not-a-flag\n").unwrap();
        let run = &p.instructions[1];
        assert_eq!(run.flags, [flag("mount", "type=cache,target=/c")]);
        assert_eq!(run.args, text("echo --not-a-flag"));
    }

    #[test]
    fn healthcheck_flags_and_text() {
        let p = parse("FROM a\nHEALTHCHECK --interval=5s CMD x\nHEALTHCHECK NONE\n").unwrap();
        let h = &p.instructions[1];
        assert_eq!(h.keyword, Keyword::Healthcheck);
        assert_eq!(h.flags, [flag("interval", "5s")]);
        assert_eq!(h.args, text("CMD x"));
        assert_eq!(p.instructions[2].args, text("NONE"));
        assert!(p.instructions[2].flags.is_empty());
    }

    #[test]
    fn other_keywords_take_no_flags() {
        let p = parse("FROM a\nENV --x=1\nWORKDIR --y\n").unwrap();
        assert!(p.instructions[1].flags.is_empty());
        assert_eq!(p.instructions[1].args, text("--x=1"));
        assert_eq!(p.instructions[2].args, text("--y"));
    }

    #[test]
    fn json_and_text_forms() {
        let p = parse(concat!(
            "FROM a\n",
            "RUN [\"echo\", \"a b\"]\n",
            "RUN echo \"a b\"\n",
            "CMD [\"a\", ]\n",
            "ENTRYPOINT   [ \"/bin/x\" ]  \n",
            "COPY [\"a b\", \"/c\"]\n",
            "VOLUME /data /logs\n",
            "VOLUME [\"/data\"]\n",
            "WORKDIR [\"/x\"]\n",
            "CMD [\"a\", 1]\n",
            "CMD [\"a\\\"b\\u0041\"]\n",
        ))
        .unwrap();
        let args: Vec<&Args> = p.instructions.iter().map(|i| &i.args).collect();
        assert_eq!(args[1], &json(&["echo", "a b"]));
        assert_eq!(args[2], &text("echo \"a b\""));
        assert_eq!(args[3], &text("[\"a\", ]"));
        assert_eq!(args[4], &json(&["/bin/x"]));
        assert_eq!(args[5], &json(&["a b", "/c"]));
        assert_eq!(args[6], &text("/data /logs"));
        assert_eq!(args[7], &json(&["/data"]));
        assert_eq!(args[8], &text("[\"/x\"]"));
        assert_eq!(args[9], &text("[\"a\", 1]"));
        assert_eq!(args[10], &json(&["a\"bA"]));
    }

    #[test]
    fn command_form_alone() {
        assert_eq!(command_form("  [\"a\",\"b\"] "), json(&["a", "b"]));
        assert_eq!(command_form("[]"), Args::Json(vec![]));
        assert_eq!(command_form("  echo hi  "), text("echo hi"));
        assert_eq!(command_form("[\"a\", ]"), text("[\"a\", ]"));
        assert_eq!(command_form("{\"a\": 1}"), text("{\"a\": 1}"));
    }

    #[test]
    fn shell_needs_the_json_form() {
        let p = parse("FROM a\nSHELL [\"/bin/bash\", \"-c\"]\n").unwrap();
        assert_eq!(p.instructions[1].args, json(&["/bin/bash", "-c"]));
        let e = parse_err("FROM a\nSHELL /bin/bash -c\n");
        assert_eq!(e.line, 2);
        assert_eq!(
            e.reason,
            "SHELL needs the JSON form, as in SHELL [\"/bin/sh\", \"-c\"]"
        );
        assert_eq!(parse_err("FROM a\nSHELL []\n").line, 2);
    }

    #[test]
    fn the_first_instruction_must_be_from_or_arg_before_it() {
        let p = parse("ARG V=1\nARG W\nFROM a:$V\nRUN x\n").unwrap();
        assert_eq!(p.instructions[0].keyword, Keyword::Arg);
        assert_eq!(p.instructions[0].args, text("V=1"));
        assert_eq!(p.instructions[2].keyword, Keyword::From);
        let e = parse_err("# c\nRUN x\nFROM a\n");
        assert_eq!(
            e,
            ParseError {
                line: 2,
                reason: "the first instruction must be FROM (or ARG before it), not RUN"
                    .to_string()
            }
        );
        let e = parse_err("ARG V\nenv X=1\nFROM a\n");
        assert_eq!(e.line, 2);
        assert!(e.reason.ends_with("not ENV"), "{e}");
    }

    #[test]
    fn every_keyword_parses_and_names_itself() {
        for k in KEYWORDS {
            assert_eq!(Keyword::from_word(k.name()), Some(k));
            assert_eq!(Keyword::from_word(&k.name().to_lowercase()), Some(k));
            assert!(k.name().chars().all(|c| c.is_ascii_uppercase()));
        }
        assert_eq!(Keyword::Stopsignal.name(), "STOPSIGNAL");
        assert_eq!(Keyword::from_word("RUNX"), None);
        let p = parse(concat!(
            "FROM a\nRUN a\nCMD a\nENTRYPOINT a\nCOPY a b\nADD a b\nENV a=b\nARG a\n",
            "WORKDIR /a\nUSER a\nEXPOSE 80\nLABEL a=b\nVOLUME /a\nSTOPSIGNAL TERM\n",
            "HEALTHCHECK NONE\nSHELL [\"a\"]\nMAINTAINER me\nONBUILD RUN a\n",
        ))
        .unwrap();
        let found: Vec<Keyword> = p.instructions.iter().map(|i| i.keyword).collect();
        assert_eq!(found, KEYWORDS);
        assert_eq!(p.instructions[17].args, text("RUN a"));
    }

    // ---- expansion ----

    #[test]
    fn plain_variables_expand_and_unset_ones_are_empty() {
        assert_eq!(word("$HOME/x").unwrap(), "/root/x");
        assert_eq!(word("${HOME}x").unwrap(), "/rootx");
        assert_eq!(word("$HOMEx").unwrap(), "");
        assert_eq!(word("a${NOPE}b$NOPE").unwrap(), "ab");
        assert_eq!(word("$A$B-$A_").unwrap(), "ab-");
    }

    #[test]
    fn a_dollar_not_followed_by_a_name_is_literal() {
        assert_eq!(word("$1").unwrap(), "$1");
        assert_eq!(word("$").unwrap(), "$");
        assert_eq!(word("a$ b").unwrap(), "a$ b");
        assert_eq!(word("cost: $5.00").unwrap(), "cost: $5.00");
        assert_eq!(word("\"$\"").unwrap(), "$");
    }

    #[test]
    fn default_forms() {
        assert_eq!(word("${NOPE:-x}").unwrap(), "x");
        assert_eq!(word("${EMPTY:-x}").unwrap(), "x");
        assert_eq!(word("${A:-x}").unwrap(), "a");
        assert_eq!(word("${NOPE-x}").unwrap(), "x");
        assert_eq!(word("${EMPTY-x}").unwrap(), "");
        assert_eq!(word("${A-x}").unwrap(), "a");
        assert_eq!(word("${NOPE:-}").unwrap(), "");
        assert_eq!(word("${NOPE:-a b}").unwrap(), "a b");
    }

    #[test]
    fn alternative_forms() {
        assert_eq!(word("${A:+x}").unwrap(), "x");
        assert_eq!(word("${EMPTY:+x}").unwrap(), "");
        assert_eq!(word("${NOPE:+x}").unwrap(), "");
        assert_eq!(word("${A+x}").unwrap(), "x");
        assert_eq!(word("${EMPTY+x}").unwrap(), "x");
        assert_eq!(word("${NOPE+x}").unwrap(), "");
    }

    #[test]
    fn nested_words_expand() {
        assert_eq!(word("${NOPE:-$B}").unwrap(), "b");
        assert_eq!(word("${NOPE:-${B}/c}").unwrap(), "b/c");
        assert_eq!(word("${NOPE:-${NADA:-deep}}").unwrap(), "deep");
        assert_eq!(word("${A:+[$B]}").unwrap(), "[b]");
        assert_eq!(word("${NOPE:-\"q }\"}").unwrap(), "q }");
        assert_eq!(word("${NOPE:-x\\}y}").unwrap(), "x}y");
        assert_eq!(word("${NOPE:-'$A'}").unwrap(), "$A");
    }

    #[test]
    fn required_forms() {
        assert_eq!(word("${A:?unused}").unwrap(), "a");
        assert_eq!(word("${EMPTY?unused}").unwrap(), "");
        let e = word("${NOPE:?you must set NOPE}").unwrap_err();
        assert!(e.contains("NOPE") && e.contains("you must set NOPE"), "{e}");
        let e = word("${EMPTY:?cannot be empty}").unwrap_err();
        assert!(e.contains("cannot be empty"), "{e}");
        let e = word("${NOPE?gone $A}").unwrap_err();
        assert!(e.contains("gone a"), "{e}");
        let e = word("${NOPE:?}").unwrap_err();
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
    }

    #[test]
    fn a_required_form_in_an_unused_word_does_not_fail() {
        assert_eq!(word("${A:-${NOPE:?x}}").unwrap(), "a");
        assert_eq!(word("${NOPE:+${NADA?x}}").unwrap(), "");
        assert!(word("${NOPE:-${NADA?x}}").is_err());
    }

    #[test]
    fn bad_and_unterminated_braces_are_errors() {
        for bad in [
            "${}", "${1}", "${A.B}", "${A:x}", "${A#x}", "${-x}", "\"${A\"",
        ] {
            let e = word(bad).unwrap_err();
            assert!(e.contains("bad substitution"), "{bad}: {e}");
        }
        for open in ["${", "${A", "${A:", "${A:-x", "a ${NOPE:-${B}"] {
            let e = word(open).unwrap_err();
            assert!(e.contains("unterminated ${"), "{open}: {e}");
        }
    }

    #[test]
    fn quotes_are_removed_and_mix_in_one_word() {
        assert_eq!(words("\"a b\"'c d'e").unwrap(), ["a bc de"]);
        assert_eq!(word("'$A \"x\"'").unwrap(), "$A \"x\"");
        assert_eq!(word("\"$A 'x'\"").unwrap(), "a 'x'");
        assert_eq!(word("x\"\"y''z").unwrap(), "xyz");
        assert_eq!(word("\"${NOPE:-a b}\"").unwrap(), "a b");
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert!(word("'abc").unwrap_err().contains("single quote"));
        assert!(word("\"abc").unwrap_err().contains("double quote"));
        assert!(word("\"abc\\\"").unwrap_err().contains("double quote"));
        assert!(words("a 'b c").unwrap_err().contains("single quote"));
    }

    #[test]
    fn escapes_outside_quotes() {
        assert_eq!(word("\\$HOME").unwrap(), "$HOME");
        assert_eq!(word("a\\\\b").unwrap(), "a\\b");
        assert_eq!(word("\\a\\'\\\"").unwrap(), "a'\"");
        assert_eq!(word("abc\\").unwrap(), "abc\\");
        assert_eq!(words("a\\ b c").unwrap(), ["a b", "c"]);
    }

    #[test]
    fn escapes_inside_double_quotes() {
        assert_eq!(word("\"a\\b\"").unwrap(), "a\\b");
        assert_eq!(word("\"a\\\"b\"").unwrap(), "a\"b");
        assert_eq!(word("\"\\$HOME\"").unwrap(), "$HOME");
        assert_eq!(word("\"a\\\\b\"").unwrap(), "a\\b");
        assert_eq!(word("'a\\b'").unwrap(), "a\\b");
    }

    #[test]
    fn the_backtick_escape_makes_backslash_ordinary() {
        let w = |t: &str| expand_word(t, '`', &vars);
        assert_eq!(w("C:\\path\\$A").unwrap(), "C:\\path\\a");
        assert_eq!(w("`$A").unwrap(), "$A");
        assert_eq!(w("\"C:\\x `\" `$A\"").unwrap(), "C:\\x \" $A");
        assert_eq!(w("${NOPE:-C:\\x}").unwrap(), "C:\\x");
        assert_eq!(
            expand_words("a` b C:\\", '`', &vars).unwrap(),
            ["a b", "C:\\"]
        );
    }

    #[test]
    fn expand_word_does_not_split_or_trim() {
        assert_eq!(word("  a   b ").unwrap(), "  a   b ");
        assert_eq!(word("").unwrap(), "");
    }

    #[test]
    fn expand_words_splits_on_unquoted_whitespace_only() {
        assert_eq!(words("  a  b\tc ").unwrap(), ["a", "b", "c"]);
        assert_eq!(words("$SPACED").unwrap(), ["x  y"]);
        assert_eq!(words("pre$SPACED post").unwrap(), ["prex  y", "post"]);
        assert_eq!(words("\"\" a ''").unwrap(), ["", "a", ""]);
        assert_eq!(words("a $NOPE b").unwrap(), ["a", "b"]);
        assert_eq!(words("${NOPE:-x y} z").unwrap(), ["x y", "z"]);
        assert_eq!(words("").unwrap(), Vec::<String>::new());
        assert_eq!(words("   ").unwrap(), Vec::<String>::new());
    }

    // ---- key=value ----

    #[test]
    fn key_value_pairs() {
        assert_eq!(
            pairs("A=1 B=\"x y\" C=").unwrap(),
            [
                pair("A", Some("1")),
                pair("B", Some("x y")),
                pair("C", Some(""))
            ]
        );
        assert_eq!(
            pairs("  PATH=$HOME/bin:${NOPE:-/usr/bin}   X='$A'  ").unwrap(),
            [
                pair("PATH", Some("/root/bin:/usr/bin")),
                pair("X", Some("$A"))
            ]
        );
        assert_eq!(
            pairs("K=a\\ b EQ=x=y").unwrap(),
            [pair("K", Some("a b")), pair("EQ", Some("x=y"))]
        );
        assert_eq!(
            pairs("D=${NOPE:-two words}").unwrap(),
            [pair("D", Some("two words"))]
        );
    }

    #[test]
    fn keys_are_expanded_too() {
        assert_eq!(pairs("key_$A=v").unwrap(), [pair("key_a", Some("v"))]);
        assert_eq!(
            pairs("\"org.x.y\"=1").unwrap(),
            [pair("org.x.y", Some("1"))]
        );
    }

    #[test]
    fn the_legacy_form_is_one_key_and_the_rest_of_the_line() {
        assert_eq!(pairs("A b c").unwrap(), [pair("A", Some("b c"))]);
        assert_eq!(
            pairs("A   b   \"c  d\"  ").unwrap(),
            [pair("A", Some("b   c  d"))]
        );
        assert_eq!(
            pairs("P $HOME/x y=z").unwrap(),
            [pair("P", Some("/root/x y=z"))]
        );
    }

    #[test]
    fn arg_declarations_have_no_value() {
        assert_eq!(pairs("NAME").unwrap(), [pair("NAME", None)]);
        assert_eq!(pairs("  NAME  ").unwrap(), [pair("NAME", None)]);
        assert_eq!(
            pairs("A=1 B").unwrap(),
            [pair("A", Some("1")), pair("B", None)]
        );
    }

    #[test]
    fn an_empty_key_is_an_error() {
        assert!(pairs("=v").unwrap_err().contains("key"));
        assert!(pairs("A=1 =v").is_err());
        assert!(pairs("$NOPE=v").is_err());
        assert!(pairs("").is_err());
        assert!(pairs("A=\"x").unwrap_err().contains("double quote"));
    }

    #[test]
    fn key_values_with_the_backtick_escape() {
        assert_eq!(
            key_values("P=C:\\x Q=a` b", '`', &vars).unwrap(),
            [pair("P", Some("C:\\x")), pair("Q", Some("a b"))]
        );
    }
}
