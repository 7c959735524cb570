//! The rule planner: runs imperative tasks with no model at all.
//!
//! A task is split into steps ("then", new lines, semicolons, and commas or "and" before a
//! verb); each step is parsed when the task starts, so a task it cannot understand is
//! refused at once with the list of what it does understand. At each step the next
//! instruction is resolved against the page by fuzzy-matching its words with element
//! names, labels, placeholders, ids and roles. What is not on the page yet is waited for
//! briefly (pages load things late), then reported.

use std::collections::VecDeque;

use agentbox_browser::{Element, Key, Observation, ScrollDirection};
use serde_json::{Map, Value};

use super::action::Action;
use super::{Decision, PlanError, PlanInput, Usage};

/// How many times a step whose element or text is not on the page yet is retried.
const MAX_LOOKS: u32 = 12;
/// The pause between two looks.
const LOOK_PAUSE_SECONDS: f64 = 0.5;
/// A weaker match than this is not a match.
const MATCH_THRESHOLD: f64 = 0.55;

pub const UNDERSTOOD: &str = "Without a language model this agent runs imperative steps joined by \"then\", commas, \
semicolons or new lines: go to URL; click X; type TEXT into FIELD; fill FIELD with TEXT; search for TEXT; \
select OPTION in FIELD; check X / uncheck X; press KEY (Enter, Tab, Escape, …); scroll down / up / to the bottom; \
go back / go forward; switch to the new tab / tab N; wait N seconds / wait for TEXT; \
what is / read / extract THING (e.g. \"what is the price of Widget Pro\", \"what is the page title\"). \
Configure an LLM provider for this agent name to run free-form tasks.";

/// One parsed instruction.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Goto(String),
    Click(String),
    Check(String, bool),
    Type { text: String, target: String, submit: bool },
    Search { text: String, target: Option<String> },
    Select { option: String, target: String },
    Key(Key),
    Scroll(ScrollDirection, f64),
    Back,
    Forward,
    Tab(TabChoice),
    Wait(f64),
    WaitFor(String),
    Extract(Query),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TabChoice {
    Newest,
    Index(usize),
    Next,
    Previous,
}

/// What an extraction asks for.
#[derive(Debug, Clone, PartialEq)]
enum Query {
    Title,
    Url,
    /// `attr` of `subject` ("the price of Widget Pro"), or `subject` alone.
    Text { raw: String, attr: Option<String>, subject: String },
}

/// What the planner is waiting to hear back about.
#[derive(Debug)]
enum Pending {
    Step(Step),
    /// An extract of `raw` ("ATTR of SUBJECT"); `rest` are phrases still to try.
    Extract { raw: String, attr: Option<String>, subject: String, rest: Vec<String> },
}

pub struct RulePlanner {
    steps: VecDeque<Step>,
    pending: Option<Pending>,
    looks: u32,
    answers: Vec<(String, String)>,
    did: Vec<String>,
}

impl RulePlanner {
    /// Parses the whole task; refuses it if any part is not understood.
    pub fn new(task: &str) -> Result<Self, PlanError> {
        let mut steps = VecDeque::new();
        for clause in split_task(task) {
            match parse_clause(&clause) {
                Some(s) => steps.push_back(s),
                None => return Err(PlanError::NotUnderstood(format!("I could not understand {clause:?}. {UNDERSTOOD}"))),
            }
        }
        if steps.is_empty() {
            return Err(PlanError::NotUnderstood(format!("The task is empty. {UNDERSTOOD}")));
        }
        Ok(Self { steps, pending: None, looks: 0, answers: Vec::new(), did: Vec::new() })
    }

    pub fn next(&mut self, input: &PlanInput<'_>) -> Result<Decision, PlanError> {
        let obs = input.observation;
        if let Some(p) = self.pending.take() {
            match p {
                Pending::Step(step) => match input.outcome {
                    // Held back by a pause: do it now.
                    Some(o) if o.held => self.steps.push_front(step),
                    Some(o) if !o.ok => {
                        if o.text.contains("stale") && self.looks < MAX_LOOKS {
                            self.looks += 1;
                            self.steps.push_front(step);
                        } else {
                            return Ok(decide(format!("Stopping: {}", o.text), Action::Fail { reason: o.text.clone() }));
                        }
                    }
                    _ => self.looks = 0,
                },
                Pending::Extract { raw, attr, subject, rest } if input.outcome.is_some_and(|o| o.held) => {
                    let (thought, action) = (format!("Looking for {subject:?} on the page"), Action::Extract { element: None, query: Some(subject.clone()) });
                    self.pending = Some(Pending::Extract { raw, attr, subject, rest });
                    return Ok(decide(thought, action));
                }
                Pending::Extract { raw, attr, subject, mut rest } => {
                    let found = input.outcome.and_then(|o| o.data.as_ref()).map(chains).unwrap_or_default();
                    if let Some(answer) = answer_from(&found, attr.as_deref(), &subject) {
                        self.looks = 0;
                        self.did.push(format!("read {raw:?}"));
                        self.answers.push((raw, answer));
                    } else if let Some(next) = (!rest.is_empty()).then(|| rest.remove(0)) {
                        let thought = format!("{subject:?} is not on the page as such; looking for {next:?}");
                        self.pending = Some(Pending::Extract { raw, attr, subject, rest });
                        return Ok(decide(thought, Action::Extract { element: None, query: Some(next) }));
                    } else if self.looks < MAX_LOOKS {
                        self.looks += 1;
                        self.steps.push_front(Step::Extract(Query::Text { raw, attr, subject: subject.clone() }));
                        return Ok(decide(format!("{subject:?} is not on the page yet; waiting"), Action::Wait { seconds: LOOK_PAUSE_SECONDS, text: None }));
                    } else {
                        let reason = format!("could not find {subject:?} on the page ({})", obs.url);
                        return Ok(decide(format!("Stopping: {reason}"), Action::Fail { reason }));
                    }
                }
            }
        }
        let Some(step) = self.steps.pop_front() else {
            return Ok(decide("All steps are done.".into(), Action::Done { result: self.result(obs) }));
        };
        match self.resolve(&step, obs) {
            Resolved::Act(thought, action) => {
                self.pending = Some(match (&step, &action) {
                    (Step::Extract(Query::Text { raw, attr, subject }), Action::Extract { .. }) => Pending::Extract {
                        raw: raw.clone(),
                        attr: attr.clone(),
                        subject: subject.clone(),
                        rest: fallback_phrases(subject),
                    },
                    _ => Pending::Step(step.clone()),
                });
                if !matches!(step, Step::Extract(_)) {
                    self.did.push(describe_step(&step));
                }
                Ok(decide(thought, action))
            }
            Resolved::Skip(why) => {
                self.did.push(why);
                self.next(&PlanInput { outcome: None, ..*input })
            }
            Resolved::NotYet(what) if self.looks < MAX_LOOKS => {
                self.looks += 1;
                self.steps.push_front(step);
                Ok(decide(format!("{what}; waiting for the page"), Action::Wait { seconds: LOOK_PAUSE_SECONDS, text: None }))
            }
            Resolved::NotYet(what) => {
                let listed: Vec<String> = obs.elements.iter().filter(|e| e.in_view).take(25).map(Element::describe).collect();
                let reason = format!("{what} (on {}). Elements in view: {}", obs.url, listed.join("; "));
                Ok(decide(format!("Stopping: {what}"), Action::Fail { reason }))
            }
        }
    }

    fn resolve(&mut self, step: &Step, obs: &Observation) -> Resolved {
        use Resolved::*;
        match step {
            Step::Goto(url) => Act(format!("Opening {url}"), Action::Navigate { url: url.clone() }),
            Step::Click(target) => match find(obs, target, Want::Click) {
                Some(e) => Act(format!("Clicking {}", e.describe()), Action::Click { element: e.index }),
                None => NotYet(format!("no element matches {target:?}")),
            },
            Step::Check(target, on) => match find(obs, target, Want::Check) {
                Some(e) if e.checked == Some(*on) => Skip(format!("{target:?} was already {}", if *on { "checked" } else { "unchecked" })),
                Some(e) => Act(format!("Clicking {} to {}", e.describe(), if *on { "check it" } else { "uncheck it" }), Action::Click { element: e.index }),
                None => NotYet(format!("no checkbox matches {target:?}")),
            },
            Step::Type { text, target, submit } => match find(obs, target, Want::Edit) {
                Some(e) => Act(format!("Typing {text:?} into {}", e.describe()), Action::Type { element: e.index, text: text.clone(), submit: *submit }),
                None => NotYet(format!("no text field matches {target:?}")),
            },
            Step::Search { text, target } => {
                let field = match target {
                    Some(t) => find(obs, t, Want::Edit),
                    None => search_field(obs),
                };
                match field {
                    Some(e) => Act(format!("Searching for {text:?} in {}", e.describe()), Action::Type { element: e.index, text: text.clone(), submit: true }),
                    None => NotYet("no search field is on the page".into()),
                }
            }
            Step::Select { option, target } => match find(obs, target, Want::Select) {
                Some(e) => Act(format!("Choosing {option:?} in {}", e.describe()), Action::Select { element: e.index, option: option.clone() }),
                None => NotYet(format!("no select box matches {target:?}")),
            },
            Step::Key(k) => Act(format!("Pressing {}", k.name()), Action::PressKey { key: *k }),
            Step::Scroll(d, pages) => Act(format!("Scrolling {d:?}").to_lowercase(), Action::Scroll { direction: *d, pages: *pages }),
            Step::Back => Act("Going back".into(), Action::Back),
            Step::Forward => Act("Going forward".into(), Action::Forward),
            Step::Tab(choice) => {
                let n = obs.tabs.len();
                let current = obs.tabs.iter().position(|t| t.target_id == obs.target_id).unwrap_or(0);
                // A tab the page opened was followed already when it opened.
                if *choice == TabChoice::Newest && obs.tabs.get(current).is_some_and(|t| t.opener_id.is_some()) {
                    return Skip("stayed on the new tab the page opened".into());
                }
                let idx = match choice {
                    TabChoice::Newest => {
                        let others = || obs.tabs.iter().enumerate().filter(|(i, _)| *i != current);
                        others().find(|(_, t)| t.opener_id.is_some()).or_else(|| others().next_back()).map(|(i, _)| i)
                    }
                    TabChoice::Index(i) => i.checked_sub(1).filter(|i| *i < n),
                    TabChoice::Next => Some((current + 1) % n.max(1)),
                    TabChoice::Previous => Some((current + n.max(1) - 1) % n.max(1)),
                };
                match idx {
                    Some(i) if n > 1 || *choice != TabChoice::Newest => Act(format!("Switching to tab {i}"), Action::SwitchTab { tab: i }),
                    _ => NotYet("no other tab is open".into()),
                }
            }
            Step::Wait(s) => Act(format!("Waiting {s} seconds"), Action::Wait { seconds: *s, text: None }),
            Step::WaitFor(t) => Act(format!("Waiting for {t:?} to appear"), Action::Wait { seconds: super::action::MAX_WAIT_SECONDS, text: Some(t.clone()) }),
            Step::Extract(Query::Title) => {
                self.answers.push(("page title".into(), obs.title.clone()));
                Skip("read the page title".into())
            }
            Step::Extract(Query::Url) => {
                self.answers.push(("page URL".into(), obs.url.clone()));
                Skip("read the page URL".into())
            }
            Step::Extract(Query::Text { subject, .. }) => {
                Act(format!("Looking for {subject:?} on the page"), Action::Extract { element: None, query: Some(subject.clone()) })
            }
        }
    }

    fn result(&self, obs: &Observation) -> Value {
        match self.answers.as_slice() {
            [(_, one)] => Value::String(one.clone()),
            [] => Value::String(format!("Done: {}. Now on \"{}\" ({}).", self.did.join(", "), obs.title, obs.url)),
            many => Value::Object(many.iter().map(|(q, a)| (q.clone(), Value::String(a.clone()))).collect::<Map<_, _>>()),
        }
    }
}

enum Resolved {
    Act(String, Action),
    /// Nothing to do in the browser (already so, or answered from the observation).
    Skip(String),
    /// What the step needs is not on the page (yet).
    NotYet(String),
}

fn decide(thought: String, action: Action) -> Decision {
    Decision { thought, action, usage: Usage::default(), repaired: false, attempts: 0 }
}

fn describe_step(step: &Step) -> String {
    match step {
        Step::Goto(u) => format!("opened {u}"),
        Step::Click(t) => format!("clicked {t:?}"),
        Step::Check(t, on) => format!("{} {t:?}", if *on { "checked" } else { "unchecked" }),
        Step::Type { text, target, .. } => format!("typed {text:?} into {target:?}"),
        Step::Search { text, .. } => format!("searched for {text:?}"),
        Step::Select { option, target } => format!("chose {option:?} in {target:?}"),
        Step::Key(k) => format!("pressed {}", k.name()),
        Step::Scroll(d, _) => format!("scrolled {d:?}").to_lowercase(),
        Step::Back => "went back".into(),
        Step::Forward => "went forward".into(),
        Step::Tab(_) => "switched tabs".into(),
        Step::Wait(s) => format!("waited {s} s"),
        Step::WaitFor(t) => format!("waited for {t:?}"),
        Step::Extract(_) => "read the page".into(),
    }
}

// ---- splitting and parsing -------------------------------------------------------------

const VERBS: &[&str] = &[
    "go", "open", "navigate", "visit", "load", "browse", "click", "tap", "press", "hit", "follow", "type", "enter", "input", "write",
    "fill", "search", "look", "select", "choose", "pick", "set", "check", "uncheck", "tick", "untick", "scroll", "back", "forward",
    "switch", "wait", "what", "what's", "whats", "read", "extract", "get", "find", "tell", "return", "report", "submit", "then",
];

/// Splits a task into clauses. Quoted text is never split.
fn split_task(task: &str) -> Vec<String> {
    // Hard separators first: new lines, semicolons and the word "then".
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let chars: Vec<char> = task.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '“' || c == '”' {
            quoted = !quoted;
        }
        if !quoted && (c == '\n' || c == ';') {
            pieces.push(std::mem::take(&mut cur));
        } else if !quoted && c == ',' {
            // A comma splits only before a verb ("select Red, then …", "click A, click B").
            let rest: String = chars[i + 1..].iter().collect();
            if starts_with_verb(&rest) {
                pieces.push(std::mem::take(&mut cur));
            } else {
                cur.push(c);
            }
        } else if !quoted && c.is_whitespace() {
            let rest: String = chars[i + 1..].iter().collect();
            let lower = rest.to_lowercase();
            if lower.starts_with("then ") || lower == "then" {
                pieces.push(std::mem::take(&mut cur));
                i += 5;
                continue;
            }
            if (lower.starts_with("and ") && starts_with_verb(&rest[4..])) || lower.starts_with("and then ") {
                pieces.push(std::mem::take(&mut cur));
                i += 4;
                continue;
            }
            cur.push(c);
        } else {
            cur.push(c);
        }
        i += 1;
    }
    pieces.push(cur);
    pieces
        .into_iter()
        .map(|p| clean_clause(&p))
        .filter(|p| !p.is_empty())
        .collect()
}

fn starts_with_verb(rest: &str) -> bool {
    let first = rest.trim_start().split(|c: char| c.is_whitespace()).next().unwrap_or("").to_lowercase();
    VERBS.contains(&first.trim_end_matches(|c: char| !c.is_alphanumeric()))
}

fn clean_clause(p: &str) -> String {
    let mut s = p.trim().trim_end_matches(['.', '!']).trim().to_owned();
    loop {
        let lower = s.to_lowercase();
        let Some(prefix) = ["then ", "and ", "please ", "first ", "finally ", "next ", "now ", "and then "]
            .iter()
            .find(|p| lower.starts_with(*p))
        else {
            break;
        };
        s = s[prefix.len()..].trim_start().to_owned();
    }
    s.trim_start_matches(',').trim().to_owned()
}

/// Strips surrounding quotes.
fn unquote(s: &str) -> String {
    let t = s.trim();
    let t = t.strip_prefix(['"', '“', '\'']).and_then(|x| x.strip_suffix(['"', '”', '\''])).unwrap_or(t);
    t.to_owned()
}

/// Case-insensitive prefix strip that returns the rest in its original case.
fn after<'a>(s: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    let lower = s.to_lowercase();
    prefixes.iter().find(|p| lower.starts_with(*p) && s.is_char_boundary(p.len())).map(|p| s[p.len()..].trim())
}

/// Splits `s` at the last (or first) ` sep ` outside quotes, case-insensitively.
fn split_on(s: &str, seps: &[&str], last: bool) -> Option<(String, String)> {
    let lower = s.to_lowercase();
    let mut best: Option<(usize, usize)> = None;
    for sep in seps {
        let pat = format!(" {sep} ");
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&pat) {
            let at = from + pos;
            let quotes_before = s[..at].chars().filter(|c| matches!(c, '"' | '“' | '”')).count();
            if quotes_before % 2 == 0 {
                let better = match best {
                    None => true,
                    Some((b, _)) => if last { at > b } else { at < b },
                };
                if better {
                    best = Some((at, pat.len()));
                }
            }
            from = at + 1;
        }
    }
    best.map(|(at, len)| (s[..at].trim().to_owned(), s[at + len..].trim().to_owned()))
}

fn parse_clause(c: &str) -> Option<Step> {
    let lower = c.to_lowercase();
    let l = lower.trim();
    if matches!(l, "back" | "go back" | "navigate back" | "go back to the previous page" | "go to the previous page") {
        return Some(Step::Back);
    }
    if matches!(l, "forward" | "go forward" | "navigate forward" | "go to the next page in history") {
        return Some(Step::Forward);
    }
    if matches!(l, "submit" | "submit the form" | "submit it") {
        return Some(Step::Key(Key::Enter));
    }
    if let Some(rest) = after(c, &["navigate to ", "go to ", "browse to ", "open ", "visit ", "load "]) {
        let rest = unquote(rest);
        return Some(match as_url(&rest) {
            Some(u) => Step::Goto(u),
            None => Step::Click(rest),
        });
    }
    if let Some(rest) = after(c, &["press ", "hit "]) {
        let key = rest.to_lowercase();
        let key = key.trim_start_matches("the ").trim_end_matches(" key").trim();
        if let Some(k) = Key::parse(key) {
            return Some(Step::Key(k));
        }
        return Some(Step::Click(unquote(rest)));
    }
    if let Some(rest) = after(c, &["click on ", "click ", "tap on ", "tap ", "follow "]) {
        return Some(Step::Click(unquote(rest)));
    }
    if let Some(rest) = after(c, &["uncheck ", "untick "]) {
        return Some(Step::Check(unquote(rest), false));
    }
    if let Some(rest) = after(c, &["check ", "tick "]) {
        return Some(Step::Check(unquote(rest), true));
    }
    if let Some(rest) = after(c, &["fill in ", "fill out ", "fill "]) {
        let (target, text) = split_on(rest, &["with"], false)?;
        return Some(Step::Type { text: unquote(&text), target: unquote(&target), submit: false });
    }
    if let Some(rest) = after(c, &["type ", "enter ", "input ", "write "]) {
        let (text, target) = split_on(rest, &["into"], false).or_else(|| split_on(rest, &["in", "on"], true))?;
        let (target, submit) = match target.to_lowercase().strip_suffix(" and submit") {
            Some(t) => (target[..t.len()].to_owned(), true),
            None => (target, false),
        };
        return Some(Step::Type { text: unquote(&text), target: unquote(&target), submit });
    }
    if let Some(rest) = after(c, &["search for ", "search ", "look up ", "look for "]) {
        return Some(match split_on(rest, &["in", "on", "using"], true) {
            Some((text, target)) if rest.starts_with('"') || !text.is_empty() && target.split_whitespace().count() <= 4 && looks_like_field(&target) => {
                Step::Search { text: unquote(&text), target: Some(unquote(&target)) }
            }
            _ => Step::Search { text: unquote(rest), target: None },
        });
    }
    if let Some(rest) = after(c, &["select ", "choose ", "pick "]) {
        let (option, target) = split_on(rest, &["in", "from", "for", "as"], true)?;
        return Some(Step::Select { option: unquote(&option), target: unquote(&target) });
    }
    if let Some(rest) = after(c, &["set "]) {
        let (target, option) = split_on(rest, &["to"], true)?;
        return Some(Step::Select { option: unquote(&option), target: unquote(&target) });
    }
    if let Some(rest) = after(c, &["scroll"]) {
        let r = rest.to_lowercase();
        let r = r.trim();
        let (dir, r) = if let Some(x) = r.strip_prefix("down") {
            (ScrollDirection::Down, x)
        } else if let Some(x) = r.strip_prefix("up") {
            (ScrollDirection::Up, x)
        } else if r.starts_with("to the bottom") || r.starts_with("to bottom") || r.starts_with("to the end") {
            (ScrollDirection::Bottom, "")
        } else if r.starts_with("to the top") || r.starts_with("to top") {
            (ScrollDirection::Top, "")
        } else if r.is_empty() {
            (ScrollDirection::Down, "")
        } else {
            return None;
        };
        let n = r.split_whitespace().find_map(|w| w.parse::<f64>().ok()).unwrap_or(1.0).clamp(0.1, 20.0);
        return Some(Step::Scroll(dir, n));
    }
    if let Some(rest) = after(c, &["switch to ", "go to tab ", "switch tab"]) {
        let r = rest.to_lowercase();
        let r = r.trim().trim_start_matches("the ").trim_end_matches(" tab").trim();
        let r = r.strip_prefix("tab").map(str::trim).unwrap_or(r);
        return Some(Step::Tab(match r {
            "new" | "newest" | "latest" | "last" | "other" | "opened" | "new one" => TabChoice::Newest,
            "next" => TabChoice::Next,
            "previous" | "first" | "original" => if r == "first" { TabChoice::Index(1) } else { TabChoice::Previous },
            n => TabChoice::Index(n.trim_start_matches('#').parse().ok()?),
        }));
    }
    if let Some(rest) = after(c, &["wait for ", "wait until ", "wait "]) {
        let r = rest.to_lowercase();
        let mut words = r.split_whitespace();
        if let (Some(n), unit) = (words.next().and_then(|w| w.trim_end_matches('s').parse::<f64>().ok()), words.next())
            && matches!(unit, None | Some("s" | "sec" | "secs" | "second" | "seconds")) {
                return Some(Step::Wait(n.clamp(0.0, super::action::MAX_WAIT_SECONDS)));
            }
        let text = rest
            .trim_end_matches(" appears")
            .trim_end_matches(" to appear")
            .trim_end_matches(" is shown")
            .trim_end_matches(" shows up")
            .trim_end_matches(" shows")
            .trim_end_matches(" is visible");
        return Some(Step::WaitFor(unquote(text)));
    }
    if let Some(rest) = after(
        c,
        &["what is ", "what's ", "whats ", "what are ", "read ", "extract ", "get ", "find ", "tell me ", "return ", "report ", "show me "],
    ) {
        return Some(Step::Extract(parse_query(rest.trim_end_matches('?').trim())?));
    }
    None
}

fn looks_like_field(t: &str) -> bool {
    let t = t.to_lowercase();
    ["field", "box", "bar", "input", "search"].iter().any(|w| t.contains(w))
}

fn parse_query(q: &str) -> Option<Query> {
    let raw = unquote(q);
    let l = raw.to_lowercase();
    let l = l.trim_start_matches("the ").trim();
    if matches!(l, "title" | "page title" | "title of the page" | "title of this page" | "page's title" | "tab title") {
        return Some(Query::Title);
    }
    if matches!(l, "url" | "page url" | "current url" | "address" | "url of the page" | "page's url") {
        return Some(Query::Url);
    }
    if l.is_empty() {
        return None;
    }
    let stripped = strip_articles(&raw);
    Some(match split_on(&stripped, &["of", "for"], false) {
        Some((attr, subject)) if !attr.is_empty() && !subject.is_empty() && attr.split_whitespace().count() <= 3 => {
            Query::Text { raw, attr: Some(strip_articles(&attr).to_lowercase()), subject: strip_articles(&unquote(&subject)) }
        }
        _ => Query::Text { raw, attr: None, subject: stripped },
    })
}

fn strip_articles(s: &str) -> String {
    let mut t = s.trim();
    for a in ["the ", "a ", "an ", "The ", "A ", "An "] {
        if let Some(x) = t.strip_prefix(a) {
            t = x.trim();
        }
    }
    t.to_owned()
}

/// `example.com/x` and `http://…` become URLs; anything with spaces is not one.
fn as_url(s: &str) -> Option<String> {
    let s = s.trim();
    if s.contains(char::is_whitespace) || s.is_empty() {
        return None;
    }
    let with_scheme = if s.starts_with("http://") || s.starts_with("https://") {
        s.to_owned()
    } else if s.contains('.') || s.starts_with("localhost") {
        format!("https://{s}")
    } else {
        return None;
    };
    url::Url::parse(&with_scheme).ok().filter(|u| u.host_str().is_some()).map(|u| u.to_string())
}

/// Other phrases to look for when `subject` is not on the page verbatim: its longer words.
fn fallback_phrases(subject: &str) -> Vec<String> {
    let mut words: Vec<&str> = subject.split_whitespace().filter(|w| w.chars().count() >= 4).collect();
    if words.len() <= 1 {
        return Vec::new();
    }
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    words.into_iter().map(str::to_owned).collect()
}

// ---- matching --------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Want {
    Click,
    Edit,
    Select,
    Check,
}

const ROLE_WORDS: &[(&str, &[&str])] = &[
    ("button", &["button"]),
    ("link", &["link"]),
    ("field", &["textbox", "searchbox", "spinbutton"]),
    ("box", &["textbox", "searchbox", "combobox", "checkbox", "listbox"]),
    ("input", &["textbox", "searchbox", "spinbutton"]),
    ("dropdown", &["combobox", "listbox"]),
    ("menu", &["combobox", "listbox", "menuitem"]),
    ("checkbox", &["checkbox"]),
    ("tab", &["tab"]),
];

fn editable(e: &Element) -> bool {
    matches!(e.role.as_str(), "textbox" | "searchbox" | "spinbutton")
        || (e.tag == "input" && !matches!(e.input_type.as_deref(), Some("checkbox" | "radio" | "submit" | "button" | "reset" | "image" | "range" | "file" | "color")))
        || e.tag == "textarea"
}

/// The element that best matches `phrase` for what the step wants to do with it.
fn find<'a>(obs: &'a Observation, phrase: &str, want: Want) -> Option<&'a Element> {
    let mut q = normalize(phrase);
    let mut role_hint: &[&str] = &[];
    for (word, roles) in ROLE_WORDS {
        if let Some(x) = q.strip_suffix(&format!(" {word}")) {
            q = x.trim().to_owned();
            role_hint = roles;
            break;
        }
    }
    let mut best: Option<(f64, &Element)> = None;
    for e in &obs.elements {
        let fits = match want {
            Want::Click => true,
            Want::Edit => editable(e),
            Want::Select => e.tag == "select" || matches!(e.role.as_str(), "combobox" | "listbox"),
            Want::Check => matches!(e.role.as_str(), "checkbox" | "radio" | "switch") || e.checked.is_some(),
        };
        if !fits {
            continue;
        }
        let fields = [
            Some(e.name.as_str()),
            e.placeholder.as_deref(),
            e.attr_name.as_deref(),
            e.id.as_deref(),
            if matches!(e.role.as_str(), "button") { e.value.as_deref() } else { None },
        ];
        let mut score = fields.iter().flatten().map(|f| similarity(&q, &normalize(f))).fold(0.0, f64::max);
        if q.is_empty() && !role_hint.is_empty() {
            score = 0.6;
        }
        if role_hint.contains(&e.role.as_str()) {
            score += 0.1;
        }
        if want == Want::Click && matches!(e.role.as_str(), "link" | "button") {
            score += 0.02;
        }
        if e.in_view {
            score += 0.02;
        }
        if e.disabled {
            score -= 0.2;
        }
        if score >= MATCH_THRESHOLD && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, e));
        }
    }
    best.map(|(_, e)| e)
}

/// The page's search box: a searchbox, or a field that says "search", or the only field.
fn search_field(obs: &Observation) -> Option<&Element> {
    let fields: Vec<&Element> = obs.elements.iter().filter(|e| editable(e) && !e.disabled).collect();
    let says_search = |e: &&Element| {
        e.role == "searchbox"
            || e.input_type.as_deref() == Some("search")
            || [Some(e.name.as_str()), e.placeholder.as_deref(), e.attr_name.as_deref(), e.id.as_deref()]
                .iter()
                .flatten()
                .any(|f| f.to_lowercase().contains("search") || *f == "q")
    };
    fields.iter().find(|e| says_search(e)).copied().or(if fields.len() == 1 { Some(fields[0]) } else { None })
}

fn normalize(s: &str) -> String {
    let cleaned: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '$' || c == '@' || c == '.' { c } else { ' ' })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().filter(|w| !matches!(*w, "the" | "a" | "an" | "on" | "to")).collect();
    words.join(" ")
}

fn stem(w: &str) -> &str {
    if w.len() > 3 { w.trim_end_matches('s') } else { w }
}

/// How well `q` names `f`, 0 to 1.
fn similarity(q: &str, f: &str) -> f64 {
    if q.is_empty() || f.is_empty() {
        return 0.0;
    }
    if q == f {
        return 1.0;
    }
    let mut s: f64 = 0.0;
    let whole_word = |hay: &str, needle: &str| format!(" {hay} ").contains(&format!(" {needle} "));
    if whole_word(f, q) {
        s = s.max(0.8 + 0.15 * q.len() as f64 / f.len() as f64);
    }
    if f.len() >= 3 && whole_word(q, f) {
        s = s.max(0.6 + 0.3 * f.len() as f64 / q.len() as f64);
    }
    let qt: Vec<&str> = q.split_whitespace().map(stem).collect();
    let ft: Vec<&str> = f.split_whitespace().map(stem).collect();
    let common = qt.iter().filter(|w| ft.contains(w)).count() as f64;
    let union = (qt.len() + ft.len()) as f64 - common;
    if union > 0.0 {
        s = s.max(0.85 * common / union + if common as usize == qt.len() { 0.1 } else { 0.0 });
    }
    if q.len() < 40 && f.len() < 40 {
        let d = levenshtein(q, f) as f64;
        let r = 1.0 - d / q.chars().count().max(f.chars().count()) as f64;
        if r >= 0.75 {
            s = s.max(0.85 * r);
        }
    }
    s.min(1.0)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- answers ---------------------------------------------------------------------------

fn chains(v: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// The answer to "ATTR of SUBJECT" (or to SUBJECT alone) from the texts around each place
/// the subject was found, innermost first.
fn answer_from(found: &[Vec<String>], attr: Option<&str>, subject: &str) -> Option<String> {
    let first = found.first()?;
    match attr {
        Some("price" | "cost" | "total" | "amount") => {
            found.iter().find_map(|chain| chain.iter().find_map(|text| money_near(text, subject)))
        }
        Some(a) => found
            .iter()
            .find_map(|chain| chain.iter().find_map(|text| labelled_value(text, a)))
            .or_else(|| first.first().cloned()),
        None => {
            // "what is the status": a "Status: shipped" anywhere near a hit wins…
            if let Some(v) = found.iter().find_map(|chain| chain.iter().find_map(|text| labelled_value(text, subject))) {
                return Some(v);
            }
            // …else the innermost text that says more than the subject itself.
            let innermost = first.iter().find(|t| {
                let rest: String = t.to_lowercase().replace(&subject.to_lowercase(), "");
                rest.chars().any(char::is_alphanumeric)
            })?;
            Some(labelled_value(innermost, subject).unwrap_or_else(|| innermost.clone()))
        }
    }
}

/// `label: value` (or `label value`) on a line of `text`.
fn labelled_value(text: &str, label: &str) -> Option<String> {
    let label = label.to_lowercase();
    text.lines().find_map(|line| {
        let lower = line.to_lowercase();
        let at = lower.find(&label)?;
        let rest = line[at + label.len()..].trim_start();
        let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?.trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The amount of money in `text` nearest after `subject` (or the first one).
fn money_near(text: &str, subject: &str) -> Option<String> {
    let amounts = money_in(text);
    if amounts.is_empty() {
        return None;
    }
    let pos = text.to_lowercase().find(&subject.to_lowercase());
    let chosen = match pos {
        Some(p) => amounts.iter().find(|(at, _)| *at >= p).or(amounts.first()),
        None => amounts.first(),
    };
    chosen.map(|(_, s)| s.clone())
}

/// Every `$12.99`, `€ 5`, `1,234.50 USD` in `text`, with its byte offset.
fn money_in(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if matches!(c, '$' | '€' | '£' | '¥') {
            let mut j = i + 1;
            while j < chars.len() && chars[j].1 == ' ' {
                j += 1;
            }
            let start = j;
            while j < chars.len() && (chars[j].1.is_ascii_digit() || (matches!(chars[j].1, ',' | '.') && j + 1 < chars.len() && chars[j + 1].1.is_ascii_digit())) {
                j += 1;
            }
            if j > start {
                let end = chars.get(j).map_or(text.len(), |(b, _)| *b);
                out.push((at, text[at..end].to_owned()));
                i = j;
                continue;
            }
        } else if c.is_ascii_digit() && (i == 0 || !chars[i - 1].1.is_alphanumeric()) {
            let mut j = i;
            while j < chars.len() && (chars[j].1.is_ascii_digit() || (matches!(chars[j].1, ',' | '.') && j + 1 < chars.len() && chars[j + 1].1.is_ascii_digit())) {
                j += 1;
            }
            let end = chars.get(j).map_or(text.len(), |(b, _)| *b);
            let tail = text[end..].trim_start();
            if let Some(cur) = ["USD", "EUR", "GBP", "€", "$"].iter().find(|c| tail.starts_with(*c)) {
                let cur_end = text.len() - tail.len() + cur.len();
                out.push((at, text[at..cur_end].to_owned()));
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_split_on_then_commas_before_verbs_semicolons_and_lines_but_not_inside_quotes() {
        let got = split_task("go to example.com, then click Products; type \"a, then b\" into search\nwhat is the price of X, Y and Z");
        assert_eq!(got, vec!["go to example.com", "click Products", "type \"a, then b\" into search", "what is the price of X, Y and Z"]);
        assert_eq!(split_task("click A and click B"), vec!["click A", "click B"]);
        assert_eq!(split_task("click Salt and Pepper"), vec!["click Salt and Pepper"]);
    }

    #[test]
    fn each_instruction_form_parses() {
        use Step::*;
        let cases: Vec<(&str, Step)> = vec![
            ("go to http://127.0.0.1:9/x", Goto("http://127.0.0.1:9/x".into())),
            ("open example.com", Goto("https://example.com/".into())),
            ("go to the products page", Click("the products page".into())),
            ("click on the Sign in button", Click("the Sign in button".into())),
            ("press Enter", Key(agentbox_browser::Key::Enter)),
            ("press the Save button", Click("the Save button".into())),
            ("type alice into the username field", Type { text: "alice".into(), target: "the username field".into(), submit: false }),
            ("enter \"New York\" in city", Type { text: "New York".into(), target: "city".into(), submit: false }),
            ("fill Email with a@b.c", Type { text: "a@b.c".into(), target: "Email".into(), submit: false }),
            ("search for red shoes", Search { text: "red shoes".into(), target: None }),
            ("select Large in the size dropdown", Select { option: "Large".into(), target: "the size dropdown".into() }),
            ("set size to Small", Select { option: "Small".into(), target: "size".into() }),
            ("check Subscribe", Check("Subscribe".into(), true)),
            ("scroll down 2 pages", Scroll(ScrollDirection::Down, 2.0)),
            ("scroll to the bottom", Scroll(ScrollDirection::Bottom, 1.0)),
            ("go back", Back),
            ("switch to the new tab", Tab(TabChoice::Newest)),
            ("switch to tab 2", Tab(TabChoice::Index(2))),
            ("wait 2 seconds", Wait(2.0)),
            ("wait for Data loaded", WaitFor("Data loaded".into())),
            ("what is the page title?", Extract(Query::Title)),
            (
                "what is the price of Widget Pro",
                Extract(Query::Text { raw: "the price of Widget Pro".into(), attr: Some("price".into()), subject: "Widget Pro".into() }),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_clause(text), Some(want), "{text}");
        }
        assert_eq!(parse_clause("make me a sandwich"), None);
    }

    fn blank() -> Observation {
        Observation {
            generation: 1,
            target_id: "t".into(),
            url: "about:blank".into(),
            title: String::new(),
            elements: Vec::new(),
            text: String::new(),
            text_truncated: false,
            scroll_y: 0,
            page_height: 0,
            viewport_height: 0,
            tabs: Vec::new(),
            screenshot: None,
        }
    }

    #[test]
    fn an_action_held_by_a_pause_is_chosen_again_and_a_refused_one_ends_the_task() {
        use super::super::Outcome;
        let obs = blank();
        let mut p = RulePlanner::new("press Enter then press Tab").unwrap();
        let input = |outcome| PlanInput { task: "", step: 1, observation: &obs, outcome, user_messages: &[] };
        assert_eq!(p.next(&input(None)).unwrap().action, Action::PressKey { key: Key::Enter });
        let held = Outcome::held("not run: paused");
        assert_eq!(p.next(&input(Some(&held))).unwrap().action, Action::PressKey { key: Key::Enter });
        let ok = Outcome::ok("pressed");
        assert_eq!(p.next(&input(Some(&ok))).unwrap().action, Action::PressKey { key: Key::Tab });
        let refused = Outcome::refused("the key bounced");
        assert_eq!(p.next(&input(Some(&refused))).unwrap().action, Action::Fail { reason: "the key bounced".into() });
    }

    #[test]
    fn a_task_it_cannot_understand_is_refused_with_what_it_understands() {
        let Err(PlanError::NotUnderstood(msg)) = RulePlanner::new("go to example.com then dance a little") else { panic!("refused") };
        assert!(msg.contains("\"dance a little\"") && msg.contains("type TEXT into FIELD"), "{msg}");
    }

    #[test]
    fn fuzzy_names_match_with_typos_and_role_words() {
        assert!(similarity("sign in", "sign in") > 0.99);
        assert!(similarity("signin", "sign in") >= MATCH_THRESHOLD);
        assert!(similarity("products", "our products") >= MATCH_THRESHOLD);
        assert!(similarity("pruducts", "products") >= MATCH_THRESHOLD);
        assert!(similarity("checkout", "about us") < MATCH_THRESHOLD);
    }

    #[test]
    fn money_and_labelled_values_are_read_next_to_their_subject() {
        let t = "Widget Mini $9.99\nWidget Pro $24.99\nGadget 1,299.00 USD";
        assert_eq!(money_near(t, "Widget Pro").as_deref(), Some("$24.99"));
        assert_eq!(money_near(t, "Gadget").as_deref(), Some("1,299.00 USD"));
        assert_eq!(labelled_value("Order 42\nStatus: shipped", "status").as_deref(), Some("shipped"));
        let found = vec![vec!["Status:".to_owned(), "Status: shipped".to_owned()]];
        assert_eq!(answer_from(&found, None, "status").as_deref(), Some("shipped"));
    }
}
