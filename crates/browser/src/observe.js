// Runs in the page: numbers the interactive elements a user could see and use, and keeps
// them in `window.__agentbox` so that actions of the same step can name them by number.
// `__GEN__` and `__MAX_TEXT__` are replaced before evaluation. Returns plain JSON.
(() => {
  const gen = __GEN__;
  const maxText = __MAX_TEXT__;
  const vw = window.innerWidth, vh = window.innerHeight;
  const squash = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const SEL = [
    'a[href]', 'button', 'input', 'select', 'textarea', 'summary',
    '[role=button]', '[role=link]', '[role=checkbox]', '[role=radio]', '[role=tab]',
    '[role=menuitem]', '[role=option]', '[role=switch]', '[role=combobox]',
    '[role=textbox]', '[role=searchbox]', '[role=slider]',
    '[contenteditable=""]', '[contenteditable=true]', '[onclick]', '[tabindex]:not([tabindex="-1"])',
  ].join(',');
  const implicitRole = (el) => {
    const tag = el.tagName;
    if (tag === 'A') return 'link';
    if (tag === 'BUTTON' || tag === 'SUMMARY') return 'button';
    if (tag === 'SELECT') return el.multiple ? 'listbox' : 'combobox';
    if (tag === 'TEXTAREA') return 'textbox';
    if (tag === 'INPUT') {
      const t = (el.type || 'text').toLowerCase();
      if (['button', 'submit', 'reset', 'image'].includes(t)) return 'button';
      if (t === 'checkbox' || t === 'radio') return t;
      if (t === 'search') return 'searchbox';
      if (t === 'range') return 'slider';
      if (t === 'number') return 'spinbutton';
      return 'textbox';
    }
    if (el.isContentEditable) return 'textbox';
    return 'generic';
  };
  const nameOf = (el) => {
    let n = squash(el.getAttribute('aria-label'));
    if (n) return n;
    const by = el.getAttribute('aria-labelledby');
    if (by) {
      n = squash(by.split(/\s+/).map((id) => (document.getElementById(id) || {}).innerText || '').join(' '));
      if (n) return n;
    }
    if (el.labels && el.labels.length) {
      n = squash(Array.from(el.labels).map((l) => l.innerText).join(' '));
      if (n) return n;
    }
    const tag = el.tagName;
    if (tag === 'INPUT' && ['submit', 'button', 'reset'].includes(el.type)) return squash(el.value) || el.type;
    if (tag === 'INPUT' && el.type === 'image') return squash(el.alt) || 'image';
    if (!['INPUT', 'SELECT', 'TEXTAREA'].includes(tag)) n = squash(el.innerText);
    if (!n) {
      const img = el.querySelector && el.querySelector('img[alt]');
      if (img) n = squash(img.alt);
    }
    if (!n) n = squash(el.getAttribute('title')) || squash(el.getAttribute('placeholder'));
    return n.length > 120 ? n.slice(0, 117) + '...' : n;
  };
  const seen = new Set();
  const refs = [];
  const out = [];
  for (const el of document.querySelectorAll(SEL)) {
    if (el.tagName === 'INPUT' && el.type === 'hidden') continue;
    // A control inside a link or button is the same target as its container.
    const outer = el.parentElement && el.parentElement.closest('a[href],button,[role=button],[role=link]');
    if (outer && seen.has(outer) && !['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)) continue;
    const r = el.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) continue;
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || st.visibility === 'collapse' || st.opacity === '0') continue;
    if (el.closest('[aria-hidden=true],[inert]')) continue;
    seen.add(el);
    const tag = el.tagName.toLowerCase();
    const e = {
      index: refs.length,
      role: el.getAttribute('role') || implicitRole(el),
      name: nameOf(el),
      tag,
      in_view: r.bottom > 0 && r.right > 0 && r.top < vh && r.left < vw,
      x: Math.round(r.left), y: Math.round(r.top), w: Math.round(r.width), h: Math.round(r.height),
    };
    if (el.id) e.id = el.id;
    const attrName = el.getAttribute('name');
    if (attrName) e.attr_name = attrName;
    if (tag === 'input' || tag === 'textarea') {
      e.input_type = tag === 'textarea' ? 'textarea' : (el.type || 'text');
      if (el.type === 'checkbox' || el.type === 'radio') e.checked = el.checked;
      else e.value = el.type === 'password' ? (el.value ? '********' : '') : el.value.slice(0, 200);
      if (el.placeholder) e.placeholder = squash(el.placeholder);
    } else if (tag === 'select') {
      const sel = el.selectedOptions && el.selectedOptions[0];
      e.value = sel ? squash(sel.text) : '';
      e.options = Array.from(el.options).slice(0, 30).map((o) => squash(o.text));
    } else if (el.isContentEditable) {
      e.value = squash(el.innerText).slice(0, 200);
    }
    if (el.disabled || el.getAttribute('aria-disabled') === 'true') e.disabled = true;
    const expanded = el.getAttribute('aria-expanded');
    if (expanded !== null) e.expanded = expanded === 'true';
    const ariaChecked = el.getAttribute('aria-checked');
    if (ariaChecked !== null) e.checked = ariaChecked === 'true';
    if (tag === 'a') e.href = el.href;
    refs.push(el);
    out.push(e);
  }
  window.__agentbox = { gen, els: refs };
  let text = document.body ? document.body.innerText || '' : '';
  text = text.split('\n').map(squash).filter((l) => l).join('\n');
  const truncated = text.length > maxText;
  if (truncated) text = text.slice(0, maxText);
  const root = document.scrollingElement || document.documentElement;
  return {
    url: location.href,
    title: document.title || '',
    elements: out,
    text,
    text_truncated: truncated,
    scroll_y: Math.round(window.scrollY),
    page_height: Math.round(root ? root.scrollHeight : vh),
    viewport_height: vh,
  };
})()
