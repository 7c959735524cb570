//! The actions an agent can take, their tool schemas (shared by every LLM planner) and
//! their parsing from a tool call.

use agentbox_browser::{Key, ScrollDirection};
use serde_json::{Value, json};

/// One thing the agent does at a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Navigate { url: String },
    Click { element: usize },
    Type { element: usize, text: String, submit: bool },
    Select { element: usize, option: String },
    PressKey { key: Key },
    Scroll { direction: ScrollDirection, pages: f64 },
    Back,
    Forward,
    SwitchTab { tab: usize },
    /// Waits `seconds`, or until `text` shows on the page (at most `seconds`).
    Wait { seconds: f64, text: Option<String> },
    /// Reads an element's text, the text around `query` on the page, or the whole page.
    Extract { element: Option<usize>, query: Option<String> },
    AskUser { question: String },
    Done { result: Value },
    Fail { reason: String },
}

/// The longest a `wait` action may wait.
pub const MAX_WAIT_SECONDS: f64 = 30.0;

impl Action {
    /// The tool name of this action.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Navigate { .. } => "navigate",
            Action::Click { .. } => "click",
            Action::Type { .. } => "type",
            Action::Select { .. } => "select",
            Action::PressKey { .. } => "press_key",
            Action::Scroll { .. } => "scroll",
            Action::Back => "back",
            Action::Forward => "forward",
            Action::SwitchTab { .. } => "switch_tab",
            Action::Wait { .. } => "wait",
            Action::Extract { .. } => "extract",
            Action::AskUser { .. } => "ask_user",
            Action::Done { .. } => "done",
            Action::Fail { .. } => "fail",
        }
    }

    /// The element this action names, if any.
    pub fn element(&self) -> Option<usize> {
        match self {
            Action::Click { element } | Action::Type { element, .. } | Action::Select { element, .. } => Some(*element),
            Action::Extract { element, .. } => *element,
            _ => None,
        }
    }

    /// The action as `{"type": name, …arguments}`, for message metadata and events.
    pub fn to_json(&self) -> Value {
        let mut v = match self {
            Action::Navigate { url } => json!({ "url": url }),
            Action::Click { element } => json!({ "element": element }),
            Action::Type { element, text, submit } => json!({ "element": element, "text": text, "submit": submit }),
            Action::Select { element, option } => json!({ "element": element, "option": option }),
            Action::PressKey { key } => json!({ "key": key.name() }),
            Action::Scroll { direction, pages } => json!({ "direction": direction_name(*direction), "pages": pages }),
            Action::Back | Action::Forward => json!({}),
            Action::SwitchTab { tab } => json!({ "tab": tab }),
            Action::Wait { seconds, text } => json!({ "seconds": seconds, "text": text }),
            Action::Extract { element, query } => json!({ "element": element, "query": query }),
            Action::AskUser { question } => json!({ "question": question }),
            Action::Done { result } => json!({ "result": result }),
            Action::Fail { reason } => json!({ "reason": reason }),
        };
        v["type"] = json!(self.name());
        v
    }

    /// Parses a tool call. The error says what was wrong, for the planner's repair round.
    pub fn from_tool(name: &str, args: &Value) -> Result<Action, String> {
        if !args.is_object() {
            return Err(format!("the arguments of {name} must be a JSON object"));
        }
        let element = || -> Result<usize, String> {
            args["element"].as_u64().map(|n| n as usize).ok_or_else(|| format!("{name} needs \"element\": the number of an element in the list"))
        };
        let string = |field: &str| -> Result<String, String> {
            args[field]
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("{name} needs \"{field}\": a non-empty string"))
        };
        Ok(match name {
            "navigate" => {
                let url = string("url")?;
                match url::Url::parse(&url) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Action::Navigate { url },
                    _ => return Err(format!("navigate needs an absolute http(s) URL, not {url:?}")),
                }
            }
            "click" => Action::Click { element: element()? },
            "type" => Action::Type {
                element: element()?,
                text: args["text"].as_str().map(str::to_owned).ok_or("type needs \"text\": a string")?,
                submit: args["submit"].as_bool().unwrap_or(false),
            },
            "select" => Action::Select { element: element()?, option: string("option")? },
            "press_key" => {
                let k = string("key")?;
                Action::PressKey { key: Key::parse(&k).ok_or_else(|| format!("unknown key {k:?}; use one of {}", Key::NAMES.join(", ")))? }
            }
            "scroll" => {
                let direction = match args["direction"].as_str().unwrap_or("down") {
                    "up" => ScrollDirection::Up,
                    "down" => ScrollDirection::Down,
                    "top" => ScrollDirection::Top,
                    "bottom" => ScrollDirection::Bottom,
                    other => return Err(format!("scroll direction must be up, down, top or bottom, not {other:?}")),
                };
                let pages = args["pages"].as_f64().unwrap_or(1.0);
                if !(0.1..=20.0).contains(&pages) {
                    return Err("scroll pages must be between 0.1 and 20".into());
                }
                Action::Scroll { direction, pages }
            }
            "back" => Action::Back,
            "forward" => Action::Forward,
            "switch_tab" => Action::SwitchTab {
                tab: args["tab"].as_u64().map(|n| n as usize).ok_or("switch_tab needs \"tab\": the number of a tab in the list")?,
            },
            "wait" => {
                let seconds = args["seconds"].as_f64().unwrap_or(2.0);
                if !(0.0..=MAX_WAIT_SECONDS).contains(&seconds) {
                    return Err(format!("wait seconds must be between 0 and {MAX_WAIT_SECONDS}"));
                }
                Action::Wait { seconds, text: args["text"].as_str().filter(|s| !s.is_empty()).map(str::to_owned) }
            }
            "extract" => Action::Extract {
                element: args["element"].as_u64().map(|n| n as usize),
                query: args["query"].as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned),
            },
            "ask_user" => Action::AskUser { question: string("question")? },
            "done" => match &args["result"] {
                Value::String(s) if !s.is_empty() => Action::Done { result: Value::String(s.clone()) },
                Value::Object(o) => Action::Done { result: Value::Object(o.clone()) },
                _ => return Err("done needs \"result\": a non-empty string or a JSON object".into()),
            },
            "fail" => Action::Fail { reason: string("reason")? },
            other => return Err(format!("there is no tool named {other:?}; use one of {}", TOOL_NAMES.join(", "))),
        })
    }
}

fn direction_name(d: ScrollDirection) -> &'static str {
    match d {
        ScrollDirection::Up => "up",
        ScrollDirection::Down => "down",
        ScrollDirection::Top => "top",
        ScrollDirection::Bottom => "bottom",
    }
}

pub const TOOL_NAMES: &[&str] =
    &["navigate", "click", "type", "select", "press_key", "scroll", "back", "forward", "switch_tab", "wait", "extract", "ask_user", "done", "fail"];

/// A tool for the model: name, description and JSON Schema of its arguments.
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub parameters: Value,
}

/// Every action as a tool, in a fixed order.
pub fn tools() -> Vec<ToolSpec> {
    let el = json!({ "type": "integer", "minimum": 0, "description": "The number of an element in the current element list." });
    let obj = |props: Value, required: &[&str]| json!({ "type": "object", "properties": props, "required": required });
    vec![
        ToolSpec { name: "navigate", description: "Open a URL in the current tab.", parameters: obj(json!({ "url": { "type": "string", "description": "Absolute http(s) URL." } }), &["url"]) },
        ToolSpec { name: "click", description: "Click an element.", parameters: obj(json!({ "element": el }), &["element"]) },
        ToolSpec {
            name: "type",
            description: "Replace the text of a text field; set submit to press Enter after.",
            parameters: obj(json!({ "element": el, "text": { "type": "string" }, "submit": { "type": "boolean" } }), &["element", "text"]),
        },
        ToolSpec {
            name: "select",
            description: "Choose an option of a select box by its text.",
            parameters: obj(json!({ "element": el, "option": { "type": "string" } }), &["element", "option"]),
        },
        ToolSpec {
            name: "press_key",
            description: "Press a key in the focused element.",
            parameters: obj(json!({ "key": { "type": "string", "enum": Key::NAMES } }), &["key"]),
        },
        ToolSpec {
            name: "scroll",
            description: "Scroll the page.",
            parameters: obj(
                json!({ "direction": { "type": "string", "enum": ["up", "down", "top", "bottom"] }, "pages": { "type": "number", "description": "Viewport heights, default 1." } }),
                &["direction"],
            ),
        },
        ToolSpec { name: "back", description: "Go back in the tab's history.", parameters: obj(json!({}), &[]) },
        ToolSpec { name: "forward", description: "Go forward in the tab's history.", parameters: obj(json!({}), &[]) },
        ToolSpec {
            name: "switch_tab",
            description: "Make another open tab the current one.",
            parameters: obj(json!({ "tab": { "type": "integer", "minimum": 0, "description": "The number of a tab in the tab list." } }), &["tab"]),
        },
        ToolSpec {
            name: "wait",
            description: "Wait for the page: a number of seconds, or until a text appears.",
            parameters: obj(json!({ "seconds": { "type": "number", "maximum": MAX_WAIT_SECONDS }, "text": { "type": "string" } }), &[]),
        },
        ToolSpec {
            name: "extract",
            description: "Read text: of an element, around a phrase on the page (query), or the whole page.",
            parameters: obj(json!({ "element": el, "query": { "type": "string" } }), &[]),
        },
        ToolSpec {
            name: "ask_user",
            description: "Ask the user a question and wait for the answer.",
            parameters: obj(json!({ "question": { "type": "string" } }), &["question"]),
        },
        ToolSpec {
            name: "done",
            description: "Finish the task with its result: a string, or a JSON object for structured results.",
            parameters: obj(json!({ "result": { "type": ["string", "object"] } }), &["result"]),
        },
        ToolSpec { name: "fail", description: "Give up on the task, saying why.", parameters: obj(json!({ "reason": { "type": "string" } }), &["reason"]) },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_parses_back_into_its_action() {
        assert_eq!(tools().iter().map(|t| t.name).collect::<Vec<_>>(), TOOL_NAMES);
        let cases = [
            Action::Navigate { url: "http://x.test/".into() },
            Action::Click { element: 3 },
            Action::Type { element: 1, text: "hi".into(), submit: true },
            Action::Select { element: 2, option: "Large".into() },
            Action::PressKey { key: Key::Enter },
            Action::Scroll { direction: ScrollDirection::Down, pages: 2.0 },
            Action::Back,
            Action::Forward,
            Action::SwitchTab { tab: 1 },
            Action::Wait { seconds: 1.5, text: Some("ready".into()) },
            Action::Extract { element: None, query: Some("price".into()) },
            Action::AskUser { question: "which?".into() },
            Action::Done { result: json!({ "price": "$5" }) },
            Action::Fail { reason: "blocked".into() },
        ];
        for a in cases {
            let v = a.to_json();
            assert_eq!(Action::from_tool(a.name(), &v).as_ref(), Ok(&a), "{v}");
        }
    }

    #[test]
    fn bad_tool_calls_say_what_to_fix() {
        assert!(Action::from_tool("click", &json!({})).unwrap_err().contains("element"));
        assert!(Action::from_tool("navigate", &json!({ "url": "ftp://x" })).unwrap_err().contains("http"));
        assert!(Action::from_tool("fly", &json!({})).unwrap_err().contains("no tool named"));
        assert!(Action::from_tool("done", &json!({ "result": 3 })).unwrap_err().contains("result"));
        assert!(Action::from_tool("press_key", &json!({ "key": "F99" })).unwrap_err().contains("Enter"));
    }
}
