// Setlist's listener page: search songs, build a playlist, upload a playlist
// file, ask for recommendations and see why they are what they are.
//
// Plain ES module, no build step, no dependencies: `setlist-search` embeds
// this file and serves it at /app.js. Every piece of data from the API is
// put into the page with textContent (through `h` below), never as HTML.

// ---------------------------------------------------------------- settings

const MIN_QUERY_CHARS = 3; // the search API refuses shorter queries
const SEARCH_DEBOUNCE_MS = 150;
const SEARCH_LIMIT = 10;
const MIN_SONGS = 5; // the recommendation API needs at least this many
const RECOMMEND_K = 10;
const STATUS_EVERY_MS = 10_000;
const TIMEOUT_MS = { search: 5_000, status: 5_000, verify: 30_000, recommend: 15_000 };
// Files above the server's upload limit (from /v1/status; this until it
// has answered) are refused here without uploading them.
let uploadLimitBytes = 16 << 20;
// The recommendation API takes at most this many songs.
const MAX_PLAYLIST = 10_000;
// Report rows drawn per playlist of an uploaded file; the rest are counted.
const REPORT_ROWS = 300;
const STORAGE_KEY = 'setlist.playlist.v1';

// Why an answer is the popularity fallback, in words a listener reads.
const FALLBACK_REASONS = {
  circuit_open: 'the recommendation pipeline is failing, so Setlist stopped asking it for a moment; these are the most popular songs instead.',
  dispatcher_unreachable: 'the recommendation service cannot be reached; these are the most popular songs instead.',
  dispatcher_refused: 'the recommendation service turned the request down; these are the most popular songs instead.',
  deadline: 'the model did not answer in time; these are the most popular songs instead.',
  deadline_too_short: 'the time allowed was shorter than the model’s fastest recent answer; these are the most popular songs instead.',
  broker_unreachable: 'the message broker between the model’s parts is not answering; these are the most popular songs instead.',
  publish_failed: 'the request could not be handed to the model’s pipeline; these are the most popular songs instead.',
  overloaded: 'the recommendation service is overloaded right now; these are the most popular songs instead.',
  no_known_tracks: 'the model knows none of the songs in your playlist; these are the most popular songs instead.',
};

const MATCHED_BY = {
  id: 'matched by its id',
  title_artist: 'matched by title and artist',
  fuzzy: 'close match (spelling differs)',
};

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

/** Makes an element; children that are strings become text nodes. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const plural = (n, one, many = `${one}s`) => `${n.toLocaleString('en')} ${n === 1 ? one : many}`;
const chars = (text) => [...text].length;

function ms(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return '–';
  return n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en');
}

function agoText(millis) {
  if (millis === null || millis === undefined) return 'no answer yet';
  if (millis < 1000) return `answered ${Math.round(millis)} ms ago`;
  if (millis < 120_000) return `answered ${(millis / 1000).toFixed(1)} s ago`;
  return `answered ${Math.round(millis / 60_000)} min ago`;
}

/** A song as the page keeps it (only the fields it shows). */
function songOf(raw) {
  if (!raw || typeof raw.id !== 'string' || raw.id === '') return null;
  return {
    id: raw.id,
    title: typeof raw.title === 'string' && raw.title !== '' ? raw.title : raw.id,
    artist: typeof raw.artist === 'string' ? raw.artist : '',
    album: typeof raw.album === 'string' && raw.album !== '' ? raw.album : null,
  };
}

const byLine = (song) => (song.artist ? `${song.title} by ${song.artist}` : song.title);

/** "Artist · Album" under a title. */
function songMeta(song) {
  return h('span', { class: 'song-meta' },
    h('span', { class: 'artist', text: song.artist || 'Unknown artist' }),
    song.album ? h('span', { class: 'album' }, ' · ', song.album) : null);
}

function songBlock(song) {
  return h('span', { class: 'song' },
    h('span', { class: 'song-title', text: song.title }),
    songMeta(song));
}

class ApiError extends Error {
  constructor(message, kind, status = 0) {
    super(message);
    this.kind = kind; // 'http' | 'timeout' | 'network' | 'parse' | 'aborted'
    this.status = status;
  }
}

/**
 * One call to the API, same origin, with a timeout. Resolves to the parsed
 * JSON; rejects with an ApiError whose message is a sentence for the
 * listener (the API's own `error` sentence when it sent one).
 */
async function api(path, { method = 'GET', json, body, timeoutMs, signal } = {}) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; controller.abort(); }, timeoutMs);
  const forward = () => controller.abort();
  if (signal) {
    if (signal.aborted) controller.abort();
    else signal.addEventListener('abort', forward, { once: true });
  }
  const failed = () => {
    if (timedOut) {
      return new ApiError(`The server did not answer within ${Math.round(timeoutMs / 1000)} seconds. Try again in a moment.`, 'timeout');
    }
    if (controller.signal.aborted) return new ApiError('Cancelled.', 'aborted');
    return new ApiError('Could not reach the Setlist server. Check that it is running, then try again.', 'network');
  };
  try {
    const headers = {};
    let payload = body;
    if (json !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(json);
    }
    let response;
    let text;
    try {
      response = await fetch(new URL(path, document.baseURI), {
        method, headers, body: payload, signal: controller.signal, cache: 'no-store',
      });
      text = await response.text();
    } catch {
      throw failed();
    }
    let data = null;
    try { data = text === '' ? null : JSON.parse(text); } catch { data = null; }
    if (!response.ok) {
      const sentence = data && typeof data.error === 'string' && data.error.trim() !== ''
        ? data.error
        : `The server answered ${response.status}${response.statusText ? ` ${response.statusText}` : ''}.`;
      throw new ApiError(sentence, 'http', response.status);
    }
    if (data === null || typeof data !== 'object') {
      throw new ApiError('The server sent an answer this page cannot read. Reload the page and try again.', 'parse');
    }
    return data;
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener('abort', forward);
  }
}

// ---------------------------------------------------------------- state

const state = {
  playlist: [], // songs, in order
  storageWorks: true,
  unknown: new Set(), // ids the model did not know in the last answer
  results: [], // current search results
  typos: new Set(), // ids of results that matched only with a typo forgiven
  active: -1, // index of the highlighted result
  recognised: [], // songs recognised in the last uploaded file
  recommendations: [], // songs of the last answer
  recommending: false,
};

const inPlaylist = (id) => state.playlist.some((song) => song.id === id);

function loadPlaylist() {
  let raw = null;
  try {
    raw = window.localStorage.getItem(STORAGE_KEY);
  } catch {
    state.storageWorks = false;
    return [];
  }
  if (!raw) return [];
  try {
    const parsed = JSON.parse(raw);
    if (!Array.isArray(parsed)) return [];
    const seen = new Set();
    const songs = [];
    for (const item of parsed) {
      const song = songOf(item);
      if (song && !seen.has(song.id)) { seen.add(song.id); songs.push(song); }
    }
    return songs.slice(0, MAX_PLAYLIST);
  } catch {
    return [];
  }
}

function savePlaylist() {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(state.playlist));
  } catch {
    if (state.storageWorks) {
      state.storageWorks = false;
      announce('This browser does not let the page keep your playlist, so a reload will empty it.');
    }
  }
}

function announce(sentence) {
  const region = $('playlist-announce');
  // The same sentence twice in a row is still announced.
  region.textContent = region.textContent === sentence ? `${sentence}\u00a0` : sentence;
}

// ---------------------------------------------------------------- playlist

/** Adds songs that are not in the playlist yet; returns how many were added. */
function addSongs(songs) {
  let added = 0;
  const have = new Set(state.playlist.map((song) => song.id));
  for (const song of songs) {
    if (state.playlist.length >= MAX_PLAYLIST) break;
    if (!song || have.has(song.id)) continue;
    have.add(song.id);
    state.playlist.push(song);
    added += 1;
  }
  if (added > 0) playlistChanged();
  return added;
}

function addSong(song) {
  if (inPlaylist(song.id)) {
    announce(`${byLine(song)} is already in your playlist.`);
    return false;
  }
  if (state.playlist.length >= MAX_PLAYLIST) {
    announce(`Your playlist has ${plural(MAX_PLAYLIST, 'song')}, the most Setlist takes. Remove some to add more.`);
    return false;
  }
  addSongs([song]);
  announce(`Added ${byLine(song)}. ${plural(state.playlist.length, 'song')} in your playlist.`);
  return true;
}

function playlistChanged() {
  savePlaylist();
  renderPlaylist();
  renderResults();
  renderRecommendationButtons();
}

function moveSong(index, delta) {
  const to = index + delta;
  if (to < 0 || to >= state.playlist.length) return false;
  const [song] = state.playlist.splice(index, 1);
  state.playlist.splice(to, 0, song);
  playlistChanged();
  announce(`Moved ${song.title} to position ${to + 1} of ${state.playlist.length}.`);
  return true;
}

function renderPlaylist() {
  const list = $('playlist-list');
  const n = state.playlist.length;
  $('playlist-count').textContent = `(${plural(n, 'song')})`;
  $('playlist-empty').hidden = n > 0;
  $('playlist-clear').hidden = n === 0;
  list.replaceChildren(...state.playlist.map((song, index) => {
    const label = byLine(song);
    const button = (action, glyph, name, edge) => h('button', {
      type: 'button',
      class: `icon-button action-${action}`,
      dataset: { action, testid: `playlist-${action}` },
      'aria-label': `${name} ${label}`,
      title: name,
      'aria-disabled': edge ? 'true' : null,
    }, h('span', { 'aria-hidden': 'true', text: glyph }));
    return h('li', {
      class: 'playlist-item',
      draggable: 'true',
      dataset: { songId: song.id, index: String(index), testid: 'playlist-item' },
    },
    h('span', { class: 'position', 'aria-hidden': 'true', text: String(index + 1) }),
    h('span', { class: 'song' },
      h('span', { class: 'song-title', text: song.title }),
      songMeta(song),
      state.unknown.has(song.id) ? h('span', { class: 'tag tag-warn', text: 'unknown to the model' }) : null),
    h('span', { class: 'item-actions' },
      button('up', '↑', 'Move up', index === 0),
      button('down', '↓', 'Move down', index === n - 1),
      button('remove', '✕', 'Remove', false)));
  }));
  renderRecommendButton();
}

function renderRecommendButton() {
  const n = state.playlist.length;
  const button = $('recommend-button');
  button.disabled = n < MIN_SONGS;
  button.setAttribute('aria-busy', String(state.recommending));
  button.textContent = state.recommending ? 'Recommending…' : 'Recommend songs';
  const missing = MIN_SONGS - n;
  $('recommend-hint').textContent = missing > 0
    ? `Add ${plural(missing, 'more song')} to get recommendations (at least ${MIN_SONGS}).`
    : `Ready: recommendations follow your ${plural(n, 'song')}, read in this order.`;
}

function focusInItem(songId, action) {
  const item = [...$('playlist-list').children].find((li) => li.dataset.songId === songId);
  const target = item && item.querySelector(`[data-action="${action}"]`);
  if (target) target.focus();
}

function setupPlaylist() {
  const list = $('playlist-list');
  list.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button || !list.contains(button)) return;
    const item = button.closest('li');
    const index = Number(item.dataset.index);
    const song = state.playlist[index];
    if (!song) return;
    const action = button.dataset.action;
    if (action === 'up' || action === 'down') {
      if (button.getAttribute('aria-disabled') === 'true') {
        announce(`${song.title} is already ${action === 'up' ? 'first' : 'last'}.`);
        return;
      }
      moveSong(index, action === 'up' ? -1 : 1);
      focusInItem(song.id, action);
    } else if (action === 'remove') {
      state.playlist.splice(index, 1);
      playlistChanged();
      announce(`Removed ${byLine(song)}. ${plural(state.playlist.length, 'song')} left.`);
      const next = state.playlist[index] || state.playlist[index - 1];
      if (next) focusInItem(next.id, 'remove');
      else $('playlist-heading').focus();
    }
  });

  // Drag and drop to reorder (the buttons do the same by keyboard).
  let dragged = null;
  list.addEventListener('dragstart', (event) => {
    const item = event.target.closest('li');
    if (!item) return;
    dragged = Number(item.dataset.index);
    event.dataTransfer.effectAllowed = 'move';
    event.dataTransfer.setData('text/plain', item.dataset.songId);
    item.classList.add('dragging');
  });
  list.addEventListener('dragend', () => {
    dragged = null;
    for (const li of list.children) li.classList.remove('dragging', 'drop-before');
  });
  list.addEventListener('dragover', (event) => {
    const item = event.target.closest('li');
    if (dragged === null || !item) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'move';
    for (const li of list.children) li.classList.toggle('drop-before', li === item);
  });
  list.addEventListener('drop', (event) => {
    const item = event.target.closest('li');
    if (dragged === null || !item) return;
    event.preventDefault();
    const to = Number(item.dataset.index);
    if (to !== dragged) moveSong(dragged, to - dragged);
  });

  $('playlist-clear').addEventListener('click', () => {
    const n = state.playlist.length;
    if (n === 0) return;
    if (!window.confirm(`Remove all ${plural(n, 'song')} from your playlist?`)) return;
    state.playlist = [];
    state.unknown.clear();
    playlistChanged();
    announce('Your playlist is empty.');
    $('search-input').focus();
  });

  // Another tab changed the playlist: show the same one here.
  window.addEventListener('storage', (event) => {
    if (event.key !== STORAGE_KEY) return;
    state.playlist = loadPlaylist();
    renderPlaylist();
    renderResults();
    renderRecommendationButtons();
  });
}

// ---------------------------------------------------------------- search

let searchTimer = 0;
let searchSeq = 0; // only the answer to the latest query is shown
let searchController = null;

function setHint(sentence, kind = 'info', extra = null) {
  const hint = $('search-hint');
  hint.className = kind === 'error' ? 'hint error' : 'hint';
  hint.replaceChildren(sentence, extra ? ' ' : '', extra || '');
}

function showResults(songs, typos = new Set()) {
  state.results = songs;
  state.typos = typos;
  state.active = -1;
  renderResults();
}

function renderResults() {
  const list = $('search-results');
  const input = $('search-input');
  list.replaceChildren(...state.results.map((song, index) => {
    const added = inPlaylist(song.id);
    return h('li', {
      id: `search-result-${index}`,
      role: 'option',
      class: `result${index === state.active ? ' active' : ''}${added ? ' added' : ''}`,
      'aria-selected': String(index === state.active),
      dataset: { songId: song.id, index: String(index), testid: 'search-result' },
    },
    h('span', { class: 'song' },
      h('span', { class: 'song-title', text: song.title }),
      songMeta(song),
      state.typos.has(song.id) ? h('span', { class: 'typo-note', text: 'close spelling (typo forgiven)' }) : null),
    h('span', { class: added ? 'tag tag-ok' : 'tag add-hint', text: added ? '✓ in playlist' : '+ add' }));
  }));
  const open = state.results.length > 0;
  list.hidden = !open;
  input.setAttribute('aria-expanded', String(open));
  if (state.active >= 0 && open) {
    input.setAttribute('aria-activedescendant', `search-result-${state.active}`);
    const active = $(`search-result-${state.active}`);
    if (active) active.scrollIntoView({ block: 'nearest' });
  } else {
    input.removeAttribute('aria-activedescendant');
  }
}

function queryNow() {
  return $('search-input').value.trim();
}

async function runSearch() {
  clearTimeout(searchTimer);
  const query = queryNow();
  const seq = ++searchSeq;
  if (searchController) searchController.abort();
  searchController = null;
  const length = chars(query);
  if (length < MIN_QUERY_CHARS) {
    $('search-results').setAttribute('aria-busy', 'false');
    showResults([]);
    setHint(length === 0
      ? `Type at least ${MIN_QUERY_CHARS} characters to search.`
      : `Type ${plural(MIN_QUERY_CHARS - length, 'more character')} to search.`);
    return;
  }
  const controller = new AbortController();
  searchController = controller;
  $('search-results').setAttribute('aria-busy', 'true');
  setHint(`Searching for “${query}”…`);
  try {
    const params = new URLSearchParams({ q: query, limit: String(SEARCH_LIMIT) });
    const data = await api(`v1/songs/search?${params}`, { timeoutMs: TIMEOUT_MS.search, signal: controller.signal });
    if (seq !== searchSeq) return; // a newer query was typed meanwhile
    const found = Array.isArray(data.songs) ? data.songs : [];
    const songs = found.map(songOf).filter(Boolean);
    // Each song says how it matched (`words`, `prefix` or `typo`).
    const typos = new Set(found.filter((raw) => raw && raw.matched === 'typo').map((raw) => raw.id));
    showResults(songs, typos);
    if (songs.length === 0) {
      setHint(`No songs found for “${query}”. Check the spelling, or try a title, an artist or an album.`);
    } else {
      const typo = data.typo_tolerant === true
        ? h('span', { class: 'typo-note', id: 'search-typo' }, 'Some results match only with a typo forgiven.')
        : null;
      setHint(`${plural(songs.length, 'song')} found for “${query}”.`, 'info', typo);
    }
  } catch (error) {
    if (seq !== searchSeq || error.kind === 'aborted') return;
    showResults([]);
    setHint(error.message, 'error');
  } finally {
    if (seq === searchSeq) {
      $('search-results').setAttribute('aria-busy', 'false');
      searchController = null;
    }
  }
}

function setActive(index) {
  state.active = index;
  renderResults();
}

function setupSearch() {
  const input = $('search-input');
  const list = $('search-results');
  input.addEventListener('input', () => {
    clearTimeout(searchTimer);
    // The results on screen are for the old words now: Enter must not add
    // one of them by surprise, so nothing stays highlighted.
    if (state.active >= 0) setActive(-1);
    list.setAttribute('aria-busy', 'true');
    if (chars(queryNow()) < MIN_QUERY_CHARS) {
      runSearch(); // at once: says what is missing and drops stale answers
      return;
    }
    searchTimer = setTimeout(runSearch, SEARCH_DEBOUNCE_MS);
  });
  input.addEventListener('keydown', (event) => {
    const n = state.results.length;
    if (event.key === 'ArrowDown') {
      if (n === 0) return;
      event.preventDefault();
      setActive(state.active < 0 ? 0 : Math.min(state.active + 1, n - 1));
    } else if (event.key === 'ArrowUp') {
      if (n === 0) return;
      event.preventDefault();
      setActive(Math.max(state.active - 1, 0));
    } else if (event.key === 'Enter') {
      event.preventDefault();
      if (state.active >= 0 && state.active < n) {
        addSong(state.results[state.active]);
      } else if (n > 0) {
        announce('Use the arrow keys to choose a song, then press Enter to add it.');
      } else {
        runSearch(); // no results yet: search now instead of waiting
      }
    } else if (event.key === 'Escape' && state.active >= 0) {
      event.preventDefault();
      setActive(-1);
    }
  });
  // Clicking a result adds it; focus stays in the search box.
  list.addEventListener('mousedown', (event) => event.preventDefault());
  list.addEventListener('click', (event) => {
    const item = event.target.closest('li[role="option"]');
    if (!item) return;
    const index = Number(item.dataset.index);
    const song = state.results[index];
    if (!song) return;
    setActive(index);
    addSong(song);
    input.focus();
  });
}

// ---------------------------------------------------------------- upload

let uploadController = null;

function setupUpload() {
  const input = $('upload-input');
  const zone = $('drop-zone');
  input.addEventListener('change', () => {
    const file = input.files && input.files[0];
    if (file) verifyFile(file);
  });
  const hasFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes('Files');
  zone.addEventListener('dragenter', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.add('dragover');
  });
  zone.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dragover');
  });
  zone.addEventListener('dragleave', (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove('dragover');
  });
  zone.addEventListener('drop', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.classList.remove('dragover');
    const files = event.dataTransfer.files;
    if (!files || files.length === 0) return;
    verifyFile(files[0], files.length > 1 ? `Only the first of the ${files.length} files dropped is checked.` : '');
  });
  // A file dropped beside the zone must not replace the page.
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (event) => {
      if (hasFiles(event) && !zone.contains(event.target)) {
        event.preventDefault();
        if (type === 'dragover') event.dataTransfer.dropEffect = 'none';
      }
    });
  }
  $('upload-add').addEventListener('click', () => {
    const songs = state.recognised;
    const have = new Set(state.playlist.map((song) => song.id));
    const already = songs.filter((song) => have.has(song.id)).length;
    const added = addSongs(songs);
    const left = songs.length - already - added; // the playlist is full
    let sentence = `Added ${plural(added, 'song')} to your playlist`;
    if (already > 0) sentence += ` (${plural(already, 'was', 'were')} already in it)`;
    sentence += '.';
    if (left > 0) sentence += ` ${plural(left, 'song')} did not fit: a playlist holds at most ${MAX_PLAYLIST.toLocaleString('en')}.`;
    const status = $('upload-status');
    status.classList.remove('visually-hidden');
    status.textContent = sentence;
  });
}

async function verifyFile(file, note = '') {
  if (uploadController) uploadController.abort();
  const controller = new AbortController();
  uploadController = controller;
  const error = $('upload-error');
  const status = $('upload-status');
  error.hidden = true;
  $('upload-report').hidden = true;
  state.recognised = [];
  if (file.size > uploadLimitBytes) {
    status.textContent = '';
    const mib = (bytes) => (bytes / (1 << 20)).toFixed(1);
    error.textContent = `“${file.name}” is ${mib(file.size)} MiB; the limit is ${mib(uploadLimitBytes)} MiB: split the playlist into smaller files.`;
    error.hidden = false;
    uploadController = null;
    return;
  }
  status.classList.remove('visually-hidden');
  status.textContent = `Checking “${file.name}”…${note ? ` ${note}` : ''}`;
  $('upload-section').setAttribute('aria-busy', 'true');
  try {
    const report = await api('v1/playlists/verify', {
      method: 'POST', body: file, timeoutMs: TIMEOUT_MS.verify, signal: controller.signal,
    });
    if (uploadController !== controller) return;
    renderReport(file.name, report, note);
  } catch (failure) {
    if (uploadController !== controller || failure.kind === 'aborted') return;
    status.textContent = `“${file.name}” could not be checked.`;
    error.textContent = failure.message;
    error.hidden = false;
  } finally {
    if (uploadController === controller) {
      uploadController = null;
      $('upload-section').setAttribute('aria-busy', 'false');
      // Choosing the same file again after editing it checks it again.
      $('upload-input').value = '';
    }
  }
}

function renderReport(fileName, report, note) {
  const playlists = Array.isArray(report.playlists) ? report.playlists : [];
  const skipped = Array.isArray(report.skipped) ? report.skipped : [];
  const entries = Number(report.entries) || 0;
  const recognisedCount = Number(report.recognised) || 0;
  const format = report.format_name || report.format || 'unknown format';

  const seen = new Set();
  const recognised = [];
  for (const playlist of playlists) {
    for (const entry of Array.isArray(playlist.entries) ? playlist.entries : []) {
      const song = entry.recognised ? songOf(entry.song) : null;
      if (song && !seen.has(song.id)) { seen.add(song.id); recognised.push(song); }
    }
  }
  state.recognised = recognised;

  let summary = `${format}: ${recognisedCount.toLocaleString('en')} of ${plural(entries, 'entry', 'entries')} recognised`;
  if (skipped.length > 0) summary += `, ${plural(skipped.length, 'line')} skipped`;
  summary += '.';
  $('upload-summary').replaceChildren(h('span', { class: 'file-name', text: fileName }), ' — ', summary);
  // Said to screen readers; the summary above shows the same to the eye.
  const status = $('upload-status');
  status.textContent = `“${fileName}” checked. ${summary}${note ? ` ${note}` : ''}`;
  status.classList.toggle('visually-hidden', note === '');

  const add = $('upload-add');
  add.hidden = recognised.length === 0;
  add.textContent = recognised.length === 1
    ? 'Add the recognised song to the playlist'
    : `Add the ${recognised.length.toLocaleString('en')} recognised songs to the playlist`;

  const several = playlists.length > 1;
  $('upload-playlists').replaceChildren(...playlists.map((playlist, index) => {
    const items = Array.isArray(playlist.entries) ? playlist.entries : [];
    const name = typeof playlist.name === 'string' && playlist.name !== ''
      ? playlist.name
      : (several ? `Playlist ${index + 1}` : 'Entries');
    const ok = items.filter((entry) => entry.recognised).length;
    const rows = items.slice(0, REPORT_ROWS).map(reportRow);
    const more = items.length > REPORT_ROWS
      ? h('p', { class: 'help', text: `… and ${plural(items.length - REPORT_ROWS, 'more entry', 'more entries')} not shown.` })
      : null;
    return h('section', { class: 'report-playlist', dataset: { testid: 'upload-playlist' } },
      h('h3', {}, h('span', { text: name }), ' ', h('span', { class: 'count', text: `(${ok} of ${items.length} recognised)` })),
      h('ul', { class: 'report-entries' }, rows),
      more);
  }));

  $('upload-skipped').replaceChildren(...(skipped.length === 0 ? [] : [
    h('h3', { text: `Skipped (${skipped.length})` }),
    h('ul', { class: 'report-entries' }, skipped.slice(0, REPORT_ROWS).map((item) => h('li', {
      class: 'entry entry-skipped', dataset: { testid: 'upload-skipped' },
    },
    h('span', { class: 'entry-mark', 'aria-hidden': 'true', text: '–' }),
    h('span', { class: 'entry-body' },
      h('span', { class: 'line', text: `Line ${item.line}: ` }),
      h('span', { text: String(item.reason || 'skipped') }))))),
    skipped.length > REPORT_ROWS
      ? h('p', { class: 'help', text: `… and ${plural(skipped.length - REPORT_ROWS, 'more line')} not shown.` })
      : null,
  ].filter(Boolean)));

  $('upload-report').hidden = false;
}

function reportRow(entry) {
  const song = entry.recognised ? songOf(entry.song) : null;
  const line = h('span', { class: 'line', text: `Line ${entry.line}: ` });
  const text = h('span', { class: 'entry-text', text: String(entry.text || '') });
  if (song) {
    return h('li', { class: 'entry entry-ok', dataset: { testid: 'upload-entry', recognised: 'true' } },
      h('span', { class: 'entry-mark', 'aria-hidden': 'true', text: '✓' }),
      h('span', { class: 'entry-body' },
        h('span', { class: 'visually-hidden', text: 'Recognised: ' }),
        line, text,
        h('span', { class: 'entry-match' },
          h('span', { 'aria-hidden': 'true', text: '→ ' }),
          h('span', { class: 'song-title', text: song.title }),
          ` by ${song.artist || 'unknown artist'}`,
          song.album ? ` (${song.album})` : '',
          ' ',
          h('span', { class: `tag tag-${entry.matched_by === 'fuzzy' ? 'warn' : 'ok'}`, text: MATCHED_BY[entry.matched_by] || 'matched' }))));
  }
  return h('li', { class: 'entry entry-bad', dataset: { testid: 'upload-entry', recognised: 'false' } },
    h('span', { class: 'entry-mark', 'aria-hidden': 'true', text: '✗' }),
    h('span', { class: 'entry-body' },
      h('span', { class: 'visually-hidden', text: 'Not recognised: ' }),
      line, text,
      h('span', { class: 'entry-reason', text: String(entry.reason || 'not recognised') })));
}

// ---------------------------------------------------------------- recommendations

let recommendController = null;

function renderRecommendationButtons() {
  for (const button of $('rec-list').querySelectorAll('button[data-song-id]')) {
    const song = state.recommendations.find((s) => s.id === button.dataset.songId);
    if (song) setAddButton(button, song);
  }
}

function setAddButton(button, song) {
  const added = inPlaylist(song.id);
  button.textContent = added ? '✓ In playlist' : '+ Add';
  button.setAttribute('aria-label', added ? `${byLine(song)} is in your playlist` : `Add ${byLine(song)} to your playlist`);
  if (added) button.setAttribute('aria-disabled', 'true');
  else button.removeAttribute('aria-disabled');
}

async function recommend() {
  if (state.playlist.length < MIN_SONGS || state.recommending) return;
  if (recommendController) recommendController.abort();
  const controller = new AbortController();
  recommendController = controller;
  state.recommending = true;
  renderRecommendButton();
  const status = $('rec-status');
  const error = $('rec-error');
  error.hidden = true;
  status.textContent = `Asking the model for ${RECOMMEND_K} songs after your ${plural(state.playlist.length, 'song')}…`;
  $('recommendations-section').setAttribute('aria-busy', 'true');
  try {
    const data = await api('v1/recommendations', {
      method: 'POST',
      json: { songs: state.playlist.map((song) => song.id), k: RECOMMEND_K },
      timeoutMs: TIMEOUT_MS.recommend,
      signal: controller.signal,
    });
    if (recommendController !== controller) return;
    renderRecommendations(data);
  } catch (failure) {
    if (recommendController !== controller || failure.kind === 'aborted') return;
    status.textContent = 'No recommendations this time.';
    error.textContent = failure.message;
    error.hidden = false;
  } finally {
    if (recommendController === controller) {
      recommendController = null;
      state.recommending = false;
      renderRecommendButton();
      $('recommendations-section').setAttribute('aria-busy', 'false');
    }
  }
}

function renderRecommendations(data) {
  const items = (Array.isArray(data.songs) ? data.songs : [])
    .map((item) => ({ song: songOf(item && item.song), score: item && item.score }))
    .filter((item) => item.song);
  state.recommendations = items.map((item) => item.song);

  const fallback = data.fallback === true;
  const reason = typeof data.fallback_reason === 'string' ? data.fallback_reason : null;
  const badge = $('rec-fallback');
  badge.hidden = !fallback;
  badge.dataset.reason = reason || '';
  if (fallback) {
    const words = (reason && FALLBACK_REASONS[reason])
      || `the model could not answer${reason ? ` (${reason})` : ''}; these are the most popular songs instead.`;
    badge.replaceChildren(h('strong', { text: 'Fallback: ' }), words);
  }
  $('rec-cached').hidden = data.cached !== true;

  const unknownIds = Array.isArray(data.unknown_songs) ? data.unknown_songs.filter((id) => typeof id === 'string') : [];
  state.unknown = new Set(unknownIds);
  const unknown = $('rec-unknown');
  unknown.hidden = unknownIds.length === 0;
  if (unknownIds.length > 0) {
    const names = unknownIds.slice(0, 5).map((id) => {
      const song = state.playlist.find((s) => s.id === id);
      return song ? `“${song.title}”` : id;
    });
    const rest = unknownIds.length > 5 ? ` and ${unknownIds.length - 5} more` : '';
    unknown.textContent = `The model does not know ${plural(unknownIds.length, 'song')} of your playlist, so ${unknownIds.length === 1 ? 'it was' : 'they were'} left out: ${names.join(', ')}${rest}.`;
  }

  $('rec-list').replaceChildren(...items.map(({ song, score }) => {
    const button = h('button', { type: 'button', class: 'add-button', dataset: { songId: song.id, testid: 'rec-add' } });
    setAddButton(button, song);
    return h('li', {
      class: 'rec-item',
      dataset: { songId: song.id, testid: 'rec-item' },
      title: Number.isFinite(score) ? `score ${Number(score).toFixed(3)}` : null,
    }, songBlock(song), button);
  }));

  $('rec-model').textContent = typeof data.model_version === 'string' ? `Model ${data.model_version}.` : '';
  renderTimings(data.timings || {});

  const count = plural(items.length, 'song');
  let sentence = items.length === 0
    ? 'The model had no songs to suggest.'
    : (fallback ? `${count} suggested (popular songs, not personal).` : `${count} recommended for your playlist.`);
  if (data.cached === true) sentence += ' From the cache.';
  $('rec-status').textContent = sentence;
  $('rec-result').hidden = false;
  renderPlaylist(); // marks the songs the model did not know
}

function renderTimings(timings) {
  const stages = Array.isArray(timings.stages) ? timings.stages : [];
  const total = Number(timings.total_ms);
  $('rec-total').textContent = Number.isFinite(total) ? `${ms(total)} ms in all` : 'total unknown';
  const rows = stages.map((stage) => {
    const queue = Math.max(0, Number(stage.queue_ms) || 0);
    const compute = Math.max(0, Number(stage.compute_ms) || 0);
    const transport = Math.max(0, Number(stage.transport_ms) || 0);
    return { part: String(stage.part || '?'), queue, compute, transport, sum: queue + compute + transport };
  });
  const scale = Math.max(Number.isFinite(total) ? total : 0, ...rows.map((row) => row.sum), 0.001);
  const percent = (value) => `${Math.min(100, (value / scale) * 100).toFixed(2)}%`;
  $('rec-timing-rows').replaceChildren(...rows.map((row) => h('li', { class: 'timing-row', dataset: { testid: 'timing-row', part: row.part } },
    h('span', { class: 'timing-part', text: row.part }),
    (() => {
      const bar = h('span', { class: 'bar', 'aria-hidden': 'true' },
        h('span', { class: 'seg seg-queue' }),
        h('span', { class: 'seg seg-compute' }),
        h('span', { class: 'seg seg-transport' }));
      const [q, c, t] = bar.children;
      q.style.width = percent(row.queue);
      c.style.width = percent(row.compute);
      t.style.width = percent(row.transport);
      return bar;
    })(),
    h('span', { class: 'timing-numbers', text: `queue ${ms(row.queue)}, compute ${ms(row.compute)}, transport ${ms(row.transport)} ms` }))));
  $('rec-timings-none').hidden = rows.length > 0;
  $('rec-legend').hidden = rows.length === 0;
}

function setupRecommendations() {
  $('recommend-button').addEventListener('click', recommend);
  $('rec-list').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-song-id]');
    if (!button) return;
    const song = state.recommendations.find((s) => s.id === button.dataset.songId);
    if (song) addSong(song);
  });
}

// ---------------------------------------------------------------- cluster status

let lastStatusText = '';

function pipelineState(dispatcher) {
  if (!dispatcher || typeof dispatcher !== 'object') return ['unknown', 'pipeline state unknown'];
  if (dispatcher.reachable === false) {
    return ['down', 'pipeline unreachable: recommendations are popular songs for now'];
  }
  if (dispatcher.breaker === 'open') {
    return ['down', 'pipeline failing (circuit open): recommendations are popular songs for now'];
  }
  if (dispatcher.breaker === 'half-open') return ['warn', 'pipeline recovering: trying it again'];
  if (dispatcher.ready === false) return ['warn', 'pipeline starting'];
  return ['ok', 'pipeline ready'];
}

function renderStatus(data) {
  if (Number.isFinite(data.limits?.upload_bytes)) uploadLimitBytes = data.limits.upload_bytes;
  const [kind, words] = pipelineState(data.dispatcher);
  const parts = [];
  if (typeof data.model_version === 'string') parts.push(`Model ${data.model_version}`);
  if (Number.isFinite(data.songs)) parts.push(plural(data.songs, 'song'));
  if (Number.isFinite(data.stages)) {
    const shards = Number.isFinite(data.output_shards) ? ` × ${plural(data.output_shards, 'output shard')}` : '';
    parts.push(`${plural(data.stages, 'stage')}${shards}`);
  }
  parts.push(words);
  setStatus(kind, parts.join(' · '));
  const list = Array.isArray(data.dispatcher && data.dispatcher.parts) ? data.dispatcher.parts : [];
  $('cluster-parts').replaceChildren(...(list.length === 0
    ? [h('li', { text: 'No pipeline parts reported.' })]
    : list.map((part) => h('li', {}, h('span', { class: 'timing-part', text: String(part.part) }), ` ${agoText(part.last_answer_ms_ago)}`))));
}

function setStatus(kind, text) {
  const box = $('cluster-status');
  box.dataset.state = kind;
  if (text !== lastStatusText) { // unchanged words are not announced again
    lastStatusText = text;
    $('cluster-text').textContent = text;
  }
}

let statusTimer = 0;

async function refreshStatus() {
  clearTimeout(statusTimer);
  try {
    renderStatus(await api('v1/status', { timeoutMs: TIMEOUT_MS.status }));
  } catch (failure) {
    setStatus('down', `Cluster status unavailable: ${failure.message}`);
  } finally {
    statusTimer = setTimeout(refreshStatus, STATUS_EVERY_MS);
  }
}

// ---------------------------------------------------------------- start

function start() {
  state.playlist = loadPlaylist();
  setupSearch();
  setupPlaylist();
  setupUpload();
  setupRecommendations();
  renderPlaylist();
  if (!state.storageWorks) {
    announce('This browser does not let the page keep your playlist, so a reload will empty it.');
  }
  refreshStatus();
  // Back to a tab after a while: show the cluster as it is now.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') refreshStatus();
  });
  // The browser may restore a typed query on reload: search it.
  if (queryNow() !== '') runSearch();
}

start();
