//! Chromium processes and the DevTools protocol, and nothing else: launching and killing
//! browsers (one process group each), a warm pool, page actions, and `/proc` helpers for
//! reaping and memory measurement. This crate knows nothing of sessions, storage or HTTP.

pub mod cdp;
mod act;
pub mod freeze;
mod launch;
mod observe;
mod page;
mod pool;
pub mod procfs;
mod state;

pub use launch::{Browser, CHROMIUM_CANDIDATES, LaunchError, LaunchOptions, Remains, find_chromium, kill_group};
pub use act::{Key, ScrollDirection};
pub use observe::{Element, Observation, ObserveOptions, TabInfo, list_tabs};
pub use page::{Page, PageError, Screenshot};
pub use pool::{Launcher, WarmPool};
pub use state::{BrowserState, TabState, capture as capture_state, restore as restore_state};
