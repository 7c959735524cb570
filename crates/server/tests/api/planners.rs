//! The LLM planners against a scripted provider on 127.0.0.1: what agentbox sends (tools,
//! elements, images, earlier results, user messages) and how it handles what comes back
//! (questions, structured results, retries, repairs, refusals, pauses, budgets).

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::llm::{Reply, ScriptedLlm, anthropic_call, openai_call};
use crate::support::{Server, Site, eventually};

const KEY_VAR: &str = "AGENTBOX_TEST_LLM_KEY";
const KEY: &str = "sk-test-not-a-real-key";

fn kinds(msgs: &[Value]) -> Vec<&str> {
    msgs.iter().map(|m| m["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_model_searches_asks_the_user_and_returns_a_json_result() {
    let site = Site::start().await;
    let llm = ScriptedLlm::start().await;
    let config = format!(
        "[agents.agi-0]\nprovider = \"openai\"\nbase_url = \"{b}/v1\"\nmodel = \"test-model\"\napi_key_env = \"{KEY_VAR}\"\nretry_base = \"10ms\"\n\
         [agents.agi-0-fast]\nprovider = \"openai\"\nbase_url = \"{b}/v1\"\nmodel = \"test-model-fast\"\nvision = false\n\
         [agents.tight]\nprovider = \"openai\"\nbase_url = \"{b}/v1\"\nmodel = \"m\"\ntoken_budget = 150\n",
        b = llm.base
    );
    let server = Server::start_with_config(&config, &["--pool-size", "1"], &[(KEY_VAR, KEY)]).await;
    assert_eq!(server.get("/v1/models").await.body["models"], json!(["agi-0", "agi-0-fast", "tight"]));
    let said = server.stdout_with("agent tight").await;
    assert!(said.contains("agent agi-0: openai model \"test-model\""), "{said}");
    assert!(!said.contains(KEY), "the key is never printed");
    let sid = server.create_session().await;

    llm.push(|_| Reply::Status(500, "overloaded"));
    llm.push(|r| openai_call("call_1", "I will search for widgets.", "type", json!({ "element": r.element("searchbox \"Search products\""), "text": "widget", "submit": true })));
    llm.push(|_| openai_call("call_2", "Two widgets match.", "ask_user", json!({ "question": "Which widget do you want: Mini or Pro?" })));
    llm.push(|_| openai_call("call_3", "The user wants the Pro.", "done", json!({ "result": { "product": "Widget Pro", "price": "$24.99" } })));

    let body = json!({ "message": "Find the price of the widget I want", "start_url": format!("{}/", site.base) }).to_string();
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &body).await.status, 200);
    assert_eq!(server.wait_status(&sid, &["waiting_for_input", "error", "finished"]).await, "waiting_for_input");
    assert_eq!(server.get(&format!("/v1/sessions/{sid}")).await.body["status"], "running");
    let msgs = server.messages(&sid).await;
    let question = msgs.iter().find(|m| m["type"] == "QUESTION").expect("a QUESTION");
    assert_eq!(question["content"], "Which widget do you want: Mini or Pro?");

    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), r#"{"message": "The Pro one"}"#).await.status, 200);
    assert_eq!(server.wait_status(&sid, &["finished", "error"]).await, "finished");

    let reqs = llm.requests();
    assert_eq!(reqs.len(), 4, "one retry after the 500, then three steps");
    assert_eq!(reqs[0].body, reqs[1].body, "the retry resends the same request");
    let first = &reqs[1];
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.header("authorization").as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(first.body["model"], "test-model");
    let tools: Vec<&str> = first.body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(tools, ["navigate", "click", "type", "select", "press_key", "scroll", "back", "forward", "switch_tab", "wait", "extract", "ask_user", "done", "fail"]);
    assert!(first.body["tools"].as_array().unwrap().iter().all(|t| t["type"] == "function" && t["function"]["parameters"]["type"] == "object"));
    let obs = first.observation();
    assert!(obs.contains("Title: Fixture Home") && obs.contains("link \"Products\"") && obs.contains("searchbox \"Search products\""), "{obs}");
    let last_user = first.body["messages"].as_array().unwrap().last().unwrap();
    let image = last_user["content"].as_array().unwrap().iter().find(|p| p["type"] == "image_url").expect("agi-0 sends a screenshot");
    assert!(image["image_url"]["url"].as_str().unwrap().starts_with("data:image/jpeg;base64,/9j/"));
    assert!(first.text().contains("Task: Find the price of the widget I want"));

    let second = &reqs[2];
    let tool_msg = second.body["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").expect("the earlier step's result");
    assert_eq!(tool_msg["tool_call_id"], "call_1");
    assert!(tool_msg["content"].as_str().unwrap().starts_with("OK: typed and pressed Enter"), "{tool_msg}");
    assert!(second.observation().contains("results for widget"), "{}", second.observation());
    assert!(reqs[3].text().contains("OK: the user answered: The Pro one"));

    let msgs = server.messages(&sid).await;
    assert_eq!(kinds(&msgs), ["USER", "LOG", "THOUGHT", "QUESTION", "USER", "THOUGHT", "DONE"]);
    let thought = &msgs[2];
    assert_eq!(thought["content"], "I will search for widgets.");
    assert_eq!(thought["metadata"]["action"]["type"], "type");
    assert_eq!(thought["metadata"]["step"], 1);
    assert_eq!(thought["metadata"]["attempts"], 2);
    assert_eq!(thought["metadata"]["usage"]["input_tokens"], 100);
    assert_eq!(msgs[6]["content"], json!({ "product": "Widget Pro", "price": "$24.99" }));
    assert_eq!(msgs[6]["metadata"]["usage"]["task_input_tokens"], 300);

    // agi-0-fast: text only, no key configured.
    let fast = server.post("/v1/sessions", r#"{"agent_name": "agi-0-fast"}"#).await.body["session_id"].as_str().unwrap().to_owned();
    llm.push(|_| openai_call("c", "", "done", json!({ "result": "fast ok" })));
    let (status, msgs) = server.run_task(&fast, "say ok").await;
    assert_eq!((status.as_str(), msgs.last().unwrap()["content"].clone()), ("finished", json!("fast ok")));
    let r = llm.requests().pop().unwrap();
    assert_eq!(r.body["model"], "test-model-fast");
    assert_eq!(r.header("authorization"), None);
    assert!(!r.body.to_string().contains("image_url"), "agi-0-fast sends no image");

    // A token budget ends the task that goes over it.
    let tight = server.post("/v1/sessions", r#"{"agent_name": "tight"}"#).await.body["session_id"].as_str().unwrap().to_owned();
    llm.push(|_| openai_call("c1", "", "scroll", json!({ "direction": "down" })));
    llm.push(|_| openai_call("c2", "", "scroll", json!({ "direction": "down" })));
    let (status, msgs) = server.run_task(&tight, "scroll forever").await;
    assert_eq!(status, "error");
    assert!(msgs.last().unwrap()["content"].as_str().unwrap().contains("token budget of 150"), "{msgs:#?}");

    // A client error from the provider is not retried; the task says what failed.
    llm.push(|_| Reply::Status(401, "invalid api key"));
    let n = llm.requests().len();
    let (status, msgs) = server.run_task(&sid, "anything").await;
    assert_eq!(status, "error");
    let err = msgs.last().unwrap()["content"].as_str().unwrap().to_owned();
    assert!(err.contains("401") && err.contains("invalid api key") && !err.contains(KEY), "{err}");
    assert_eq!(llm.requests().len(), n + 1);
    assert!(!server.log().contains(KEY), "the provider key never reaches the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_model_is_told_of_refused_elements_and_user_messages_and_its_malformed_call_is_repaired() {
    let site = Site::start().await;
    let llm = ScriptedLlm::start().await;
    let config = format!("[agents.agi-0]\nprovider = \"anthropic\"\nbase_url = \"{}\"\nmodel = \"claude-test\"\napi_key_env = \"{KEY_VAR}\"\n", llm.base);
    let server = Server::start_with_config(&config, &["--pool-size", "1"], &[(KEY_VAR, KEY)]).await;
    let sid = server.create_session().await;

    let gate = Arc::new(Semaphore::new(0));
    llm.push_gated(gate.clone(), |_| anthropic_call("toolu_1", "Clicking the widget.", "click", json!({ "element": 999 })));
    llm.push(|_| {
        Reply::Json(json!({
            "type": "message", "role": "assistant",
            "content": [{ "type": "tool_use", "id": "toolu_2", "name": "done", "input": "{oops" }],
            "usage": { "input_tokens": 10, "output_tokens": 5 }
        }))
    });
    llm.push(|_| anthropic_call("toolu_3", "Fixed.", "done", json!({ "result": "repaired ok" })));

    let body = json!({ "message": "Open the cheapest widget", "start_url": format!("{}/products", site.base) }).to_string();
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), &body).await.status, 200);
    llm.wait_requests(1).await;
    // A message while the agent works reaches it at its next step.
    assert_eq!(server.post(&format!("/v1/sessions/{sid}/message"), r#"{"message": "Prefer the cheapest."}"#).await.status, 200);
    gate.add_permits(1);
    assert_eq!(server.wait_status(&sid, &["finished", "error"]).await, "finished");

    let reqs = llm.requests();
    assert_eq!(reqs.len(), 3);
    let first = &reqs[0];
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.header("x-api-key").as_deref(), Some(KEY));
    assert_eq!(first.header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert!(first.body["system"].as_str().unwrap().contains("browser agent"));
    assert!(first.body["tools"].as_array().unwrap().iter().all(|t| t["input_schema"]["type"] == "object"));
    let blocks = first.body["messages"][0]["content"].as_array().unwrap();
    assert!(blocks.iter().any(|b| b["type"] == "image" && b["source"]["media_type"] == "image/jpeg"), "agi-0 sends the screenshot");
    assert!(first.observation().contains("Widget Pro"));

    let second = &reqs[1];
    let roles: Vec<&str> = second.body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"], "roles alternate");
    let back = second.body["messages"][2]["content"].as_array().unwrap();
    assert_eq!(back[0]["type"], "tool_result");
    assert_eq!(back[0]["tool_use_id"], "toolu_1");
    assert!(back[0]["content"].as_str().unwrap().contains("REFUSED: element 999 does not exist"), "{}", back[0]);
    assert!(second.text().contains("Message from the user: Prefer the cheapest."));

    let repair = &reqs[2];
    let last = repair.body["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["content"][0]["is_error"], true);
    assert!(last["content"][0]["content"].as_str().unwrap().contains("not valid JSON"), "{last}");

    let msgs = server.messages(&sid).await;
    assert!(msgs.iter().any(|m| m["type"] == "LOG" && m["content"].as_str().unwrap().starts_with("refused: element 999")), "{msgs:#?}");
    let done = msgs.iter().find(|m| m["type"] == "DONE").unwrap();
    assert_eq!(done["content"], "repaired ok");
    assert_eq!(done["metadata"]["repaired"], true);
    assert_eq!(kinds(&msgs).iter().filter(|k| **k == "USER").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_task_takes_no_action_until_resumed_then_goes_on_with_its_context() {
    let site = Site::start().await;
    let llm = ScriptedLlm::start().await;
    let config = format!("[agents.agi-0]\nprovider = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"\n", llm.base);
    let server = Server::start_with_config(&config, &["--pool-size", "1"], &[]).await;
    let sid = server.create_session().await;
    let p = |a: &str| format!("/v1/sessions/{sid}/{a}");

    let gate = Arc::new(Semaphore::new(0));
    let products = format!("{}/products", site.base);
    llm.push(move |_| openai_call("c1", "Opening the products.", "navigate", json!({ "url": products })));
    llm.push_gated(gate.clone(), |_| openai_call("c2", "", "done", json!({ "result": "too early" })));
    llm.push(|_| openai_call("c3", "", "done", json!({ "result": "finished after resume" })));

    assert_eq!(server.post(&p("message"), &format!(r#"{{"message": "look around", "start_url": "{}/"}}"#, site.base)).await.status, 200);
    llm.wait_requests(2).await; // step 2 is being planned

    assert_eq!(server.post(&p("pause"), "{}").await.body["message"], "Session paused successfully");
    assert_eq!(server.get(&p("status")).await.body["status"], "paused");
    assert_eq!(server.get(&format!("/v1/sessions/{sid}")).await.body["status"], "paused");
    server.post(&p("pause"), "{}").await.assert_error(409, "already_paused", "already paused");
    assert_eq!(server.post(&p("message"), r#"{"message": "note: prices in USD"}"#).await.status, 200);

    gate.add_permits(1);
    eventually("the planned action to be held", std::time::Duration::from_secs(20), || async {
        server.messages(&sid).await.iter().any(|m| m["type"] == "LOG" && m["content"].as_str().unwrap().starts_with("paused before")).then_some(())
    })
    .await;
    let msgs = server.messages(&sid).await;
    assert!(!msgs.iter().any(|m| m["type"] == "DONE"), "no action ran while paused: {msgs:#?}");
    assert_eq!(llm.requests().len(), 2, "no planning while paused");
    assert_eq!(server.get(&p("status")).await.body["status"], "paused");

    assert_eq!(server.post(&p("resume"), "{}").await.body["message"], "Session resumed successfully");
    server.post(&p("resume"), "{}").await.assert_error(409, "not_paused", "not paused");
    assert_eq!(server.wait_status(&sid, &["finished", "error"]).await, "finished");
    let third = &llm.requests()[2];
    assert!(third.text().contains("REFUSED: not run: the user paused the task"), "the planner learns its action was held");
    assert!(third.text().contains("Message from the user: note: prices in USD"));
    assert!(third.observation().contains("URL: ") && third.observation().contains("/products"), "same context: still on the products page");
    let msgs = server.messages(&sid).await;
    let dones: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "DONE").collect();
    assert_eq!(dones.len(), 1);
    assert_eq!(dones[0]["content"], "finished after resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_times_out_is_retried_then_fails_the_task_saying_so() {
    let llm = ScriptedLlm::start().await;
    let config = format!(
        "[agents.agi-0]\nprovider = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"\nrequest_timeout = \"300ms\"\nmax_retries = 1\nretry_base = \"10ms\"\n",
        llm.base
    );
    let server = Server::start_with_config(&config, &["--pool-size", "1"], &[]).await;
    let sid = server.create_session().await;
    let never = Arc::new(Semaphore::new(0));
    llm.push_gated(never.clone(), |_| Reply::Status(200, "{}"));
    llm.push_gated(never.clone(), |_| Reply::Status(200, "{}"));
    let (status, msgs) = server.run_task(&sid, "anything").await;
    assert_eq!(status, "error");
    let err = msgs.last().unwrap()["content"].as_str().unwrap().to_owned();
    assert!(err.contains("no answer within 300ms") && err.contains("gave up after 2 attempts"), "{err}");
    assert_eq!(llm.requests().len(), 2);
}
