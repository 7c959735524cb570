//! The text an LLM planner is shown: the system prompt and one observation.

use std::fmt::Write;

use agentbox_browser::Observation;

/// Elements listed per step at most; the rest are counted.
pub const MAX_LISTED_ELEMENTS: usize = 250;

pub const SYSTEM_PROMPT: &str = "You are a browser agent. You work a real web browser, one action per step, to do the user's task.\n\
At each step you get the page: URL, title, open tabs, the interactive elements in view (numbered), and the visible text.\n\
Reply with exactly one tool call. Put a short thought (what you see, what you do next and why) in your text.\n\
Element numbers are valid only for the step that listed them.\n\
When the task is done, call done with the result (a JSON object when the task asks for structured data).\n\
When you need something only the user knows (a choice, credentials, a confirmation), call ask_user.\n\
If the task cannot be done, call fail with the reason.";

/// One observation as text: page, tabs, elements in view, text digest.
pub fn observation_text(obs: &Observation, step: u32, active_tab: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Step {step}.");
    let _ = writeln!(s, "URL: {}", obs.url);
    let _ = writeln!(s, "Title: {}", obs.title);
    if obs.tabs.len() > 1 {
        let _ = writeln!(s, "Tabs:");
        for (i, t) in obs.tabs.iter().enumerate() {
            let mark = if t.target_id == active_tab { " (current)" } else { "" };
            let _ = writeln!(s, "  [{i}] {} — {}{mark}", t.title, t.url);
        }
    }
    let _ = writeln!(s, "Scroll: {}px of {}px (viewport {}px)", obs.scroll_y, obs.page_height, obs.viewport_height);
    let _ = writeln!(s, "Interactive elements in view:");
    let mut listed = 0;
    for e in obs.elements.iter().filter(|e| e.in_view) {
        if listed == MAX_LISTED_ELEMENTS {
            break;
        }
        let _ = writeln!(s, "  {}", e.describe());
        listed += 1;
    }
    if listed == 0 {
        let _ = writeln!(s, "  (none)");
    }
    let in_view = obs.elements.iter().filter(|e| e.in_view).count();
    let (above, below) = obs.out_of_view();
    if in_view > listed || above + below > 0 {
        let _ = writeln!(
            s,
            "  ({} more in view not listed, {above} above and {below} below the viewport: scroll to see them)",
            in_view - listed
        );
    }
    let _ = writeln!(s, "Visible text{}:", if obs.text_truncated { " (cut)" } else { "" });
    s.push_str(&obs.text);
    s
}
