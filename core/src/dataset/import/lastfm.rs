//! Last.fm-1K listening histories: TSV lines `userid, timestamp,
//! artist-mbid, artist-name, track-mbid, track-name`, with an optional
//! header. A history has no playlists, so each user's scrobbles are cut into
//! listening sessions at long pauses, and each session becomes a playlist.

use super::super::error::{DatasetError, Location, Problem};
use super::super::store::check_text;
use super::super::{DatasetBuilder, MAX_PLAYLIST_TRACKS, MAX_TEXT_BYTES, MAX_TRACKS};
use super::table::{Dialect, Table};
use super::{SessionOptions, Sink, TrackFields, TrackRecord, compose_id};
use crate::progress::Progress;
use csv::StringRecord;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

const COLUMNS: usize = 6;
const NAMES: &str = "userid, timestamp, artist-mbid, artist-name, track-mbid, track-name";
const FIELDS: TrackFields = TrackFields {
    id: "track-mbid",
    title: "track-name",
    artist: "artist-name",
    album: "album",
};
const PLAYLIST_PREFIX: &str = "lastfm:";
/// `@2009-05-04T23:08:57Z`, which follows the user in a session's id.
const TIMESTAMP_SUFFIX_LEN: usize = 21;

/// Whether `line` looks like a scrobble line or this format's header, for
/// format detection.
pub(super) fn is_scrobble_line(line: &str) -> bool {
    line.split('\t').count() == COLUMNS
}

/// One listen, as small as it can be: full Last.fm-1K has 19 million.
struct Scrobble {
    user: u32,
    time: i64,
    /// Index into the import's own pool of tracks, not the catalogue: only
    /// tracks of kept sessions enter the catalogue.
    track: u32,
    file: u32,
    line: u64,
}

pub(super) fn read(
    files: &[PathBuf],
    options: &SessionOptions,
    sink: &mut Sink<'_>,
    progress: &dyn Progress,
) -> Result<(), DatasetError> {
    let mut users: HashMap<String, u32> = HashMap::new();
    let mut pool = DatasetBuilder::default();
    let mut scrobbles = Vec::new();
    let mut record = StringRecord::new();
    for (file, path) in files.iter().enumerate() {
        let mut table = Table::open(path, Dialect::Tsv, progress)?;
        let mut listed = Vec::new();
        let mut first = true;
        while let Some(line) = table.read(&mut record)? {
            let at = table.at(line);
            if first && is_profile_header(&record) {
                return Err(DatasetError::ProfileTable {
                    path: table.path().to_path_buf(),
                });
            }
            if record.len() != COLUMNS {
                return Err(DatasetError::FieldCount {
                    at,
                    found: record.len(),
                    expected: COLUMNS,
                    names: NAMES,
                });
            }
            // A header names the columns where the timestamp would be.
            let header = first && !record[1].starts_with(|c: char| c.is_ascii_digit());
            first = false;
            if header {
                continue;
            }
            let user = &record[0];
            check_text(user, true).map_err(|p| DatasetError::invalid(at.clone(), "userid", p))?;
            let session_id_len = PLAYLIST_PREFIX.len() + user.len() + TIMESTAMP_SUFFIX_LEN;
            if session_id_len > MAX_TEXT_BYTES {
                let problem = Problem::ComposedTooLong {
                    what: "session id",
                    len: session_id_len,
                    limit: MAX_TEXT_BYTES,
                };
                return Err(DatasetError::invalid(at, "userid", problem));
            }
            let time = parse_utc(&record[1]).map_err(|reason| {
                let problem = Problem::Timestamp {
                    value: record[1].to_owned(),
                    reason,
                };
                DatasetError::invalid(at.clone(), "timestamp", problem)
            })?;
            let (artist, mbid, title) = (&record[3], &record[4], &record[5]);
            let id = if mbid.is_empty() {
                // Without a track-mbid only artist and title tell songs
                // apart, so the title must be there.
                check_text(title, true)
                    .map_err(|p| DatasetError::invalid(at.clone(), "track-name", p))?;
                compose_id(
                    &at,
                    "artist-name + track-name",
                    "track id",
                    &[artist, " — ", title],
                )?
            } else {
                mbid.to_owned()
            };
            let track = TrackRecord {
                id: &id,
                title,
                artist,
                album: None,
            };
            Sink::check_track(&at, &FIELDS, &track)?;
            let user = match users.get(user) {
                Some(&known) => known,
                None => {
                    let next = users.len() as u32;
                    users.insert(user.to_owned(), next);
                    next
                }
            };
            let track = pool.track(&id, title, artist, None);
            if pool.track_count() > MAX_TRACKS {
                return Err(DatasetError::CatalogueTooLarge { limit: MAX_TRACKS });
            }
            listed.push(Scrobble {
                user,
                time,
                track,
                file: file as u32,
                line,
            });
        }
        // Exports list newest first; turning such a file around keeps
        // scrobbles with equal timestamps in the order they were played
        // through the stable sort below.
        if is_newest_first(&listed) {
            listed.reverse();
        }
        scrobbles.append(&mut listed);
    }

    let seen_before = scrobbles.len();
    let mut seen = HashSet::with_capacity(scrobbles.len());
    scrobbles.retain(|s| seen.insert((s.user, s.time, s.track)));
    let repeated = seen_before - scrobbles.len();
    if repeated > 0 {
        sink.note(&format!(
            "{repeated} scrobbles were listed more than once (same user, time and track) and \
             are counted once"
        ));
    }

    let mut names: Vec<(&str, u32)> = users
        .iter()
        .map(|(name, &id)| (name.as_str(), id))
        .collect();
    names.sort_unstable();
    let mut rank = vec![0u32; names.len()];
    for (position, (_, id)) in names.iter().enumerate() {
        rank[*id as usize] = position as u32;
    }
    scrobbles.sort_by_key(|s| (rank[s.user as usize], s.time));

    let pool = pool.finish();
    let mut catalogue: Vec<Option<u32>> = vec![None; pool.tracks.len()];
    let gap = i64::try_from(options.gap_seconds).unwrap_or(i64::MAX);
    let mut short = 0usize;
    for session in scrobbles.chunk_by(|a, b| a.user == b.user && b.time - a.time <= gap) {
        if session.len() < options.min_tracks {
            short += 1;
            continue;
        }
        let first = &session[0];
        let user = names[rank[first.user as usize] as usize].0;
        let id = format!("{PLAYLIST_PREFIX}{user}@{}", format_utc(first.time));
        let at = Location::line(&files[first.file as usize], first.line);
        if session.len() > MAX_PLAYLIST_TRACKS {
            return Err(DatasetError::PlaylistTooLong {
                at,
                playlist: id,
                limit: MAX_PLAYLIST_TRACKS,
                hint: ", or import with a shorter session gap",
            });
        }
        let mut tracks = Vec::with_capacity(session.len());
        for scrobble in session {
            let index = match catalogue[scrobble.track as usize] {
                Some(index) => index,
                None => {
                    let t = &pool.tracks[scrobble.track as usize];
                    let record = TrackRecord {
                        id: &t.id,
                        title: &t.title,
                        artist: &t.artist,
                        album: None,
                    };
                    let index = sink.track(&record)?;
                    catalogue[scrobble.track as usize] = Some(index);
                    index
                }
            };
            tracks.push(index);
        }
        sink.playlist(at, id, None, tracks)?;
    }
    if short > 0 {
        sink.note(&format!(
            "{short} listening sessions shorter than {} tracks were left out",
            options.min_tracks
        ));
    }
    Ok(())
}

/// The profile table (`#id gender age country registered`) sits beside the
/// histories in the Last.fm-1K download and is easy to pass by mistake.
fn is_profile_header(record: &StringRecord) -> bool {
    record.len() == 5
        && record
            .get(0)
            .is_some_and(|c| c.trim_start_matches('#') == "id")
}

/// Whether most consecutive scrobbles of a user go back in time.
fn is_newest_first(scrobbles: &[Scrobble]) -> bool {
    let (mut forward, mut backward) = (0usize, 0usize);
    for pair in scrobbles.windows(2) {
        if pair[0].user == pair[1].user {
            match pair[1].time.cmp(&pair[0].time) {
                std::cmp::Ordering::Greater => forward += 1,
                std::cmp::Ordering::Less => backward += 1,
                std::cmp::Ordering::Equal => {}
            }
        }
    }
    backward > forward
}

/// Seconds since 1970 of a UTC time written exactly `2009-05-04T23:08:57Z`.
fn parse_utc(value: &str) -> Result<i64, &'static str> {
    let b = value.as_bytes();
    if b.len() != 20 {
        return Err("it must be 20 characters long");
    }
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return Err("the separators are not where they belong");
    }
    let number = |from: usize, to: usize| -> Result<i64, &'static str> {
        b[from..to].iter().try_fold(0i64, |n, &d| {
            if d.is_ascii_digit() {
                Ok(n * 10 + i64::from(d - b'0'))
            } else {
                Err("a digit is missing")
            }
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month) {
        return Err("the month is out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("the day is out of range");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("the time of day is out of range");
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// The inverse of [`parse_utc`].
fn format_utc(time: i64) -> String {
    let (days, seconds) = (time.div_euclid(86_400), time.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithms, on the proleptic Gregorian
// calendar with years starting in March so leap days come last.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, import_error};
    use super::super::{Format, ImportOptions, SessionOptions, import};
    use super::*;

    fn import_lastfm(content: &str, sessions: SessionOptions) -> crate::dataset::Dataset {
        let dir = fixture(&[("h.tsv", content)]);
        let options = ImportOptions {
            format: Some(Format::LastFm),
            sessions,
        };
        import(
            &[dir.path().join("h.tsv")],
            &options,
            &crate::progress::Silent,
        )
        .unwrap()
    }

    fn line(user: &str, time: &str, track: &str) -> String {
        format!("{user}\t{time}\tartist-mbid\tArtist\t{track}\tTitle {track}\n")
    }

    #[test]
    fn timestamps_parse_strictly_and_round_trip() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_utc("2009-05-04T23:08:57Z"), Ok(1_241_478_537));
        assert_eq!(parse_utc("2000-02-29T12:00:00Z"), Ok(951_825_600));
        for t in [0, 1_241_478_537, 951_825_600, -86_401, 253_402_300_799] {
            assert_eq!(parse_utc(&format_utc(t)), Ok(t), "{}", format_utc(t));
        }
        assert_eq!(
            parse_utc("2009-05-04 23:08:57"),
            Err("it must be 20 characters long")
        );
        assert_eq!(
            parse_utc("2009/05/04T23:08:57Z"),
            Err("the separators are not where they belong")
        );
        assert_eq!(parse_utc("2009-0x-04T23:08:57Z"), Err("a digit is missing"));
        assert_eq!(
            parse_utc("2009-13-04T23:08:57Z"),
            Err("the month is out of range")
        );
        assert_eq!(
            parse_utc("2009-02-29T23:08:57Z"),
            Err("the day is out of range")
        );
        assert_eq!(
            parse_utc("2009-05-04T24:08:57Z"),
            Err("the time of day is out of range")
        );
        assert_eq!(
            parse_utc("2009-05-04T23:08:5é"),
            Err("the separators are not where they belong")
        );
    }

    #[test]
    fn histories_are_cut_into_sessions_at_long_pauses() {
        // Newest first, as Last.fm exports; two users; one pause of exactly
        // 30 minutes (same session) and one of 30 minutes and 1 second.
        let history = [
            line("u2", "2009-01-01T10:00:00Z", "c"),
            line("u2", "2009-01-01T09:59:00Z", "a"),
            line("u1", "2009-01-01T11:00:01Z", "d"),
            line("u1", "2009-01-01T10:30:00Z", "c"),
            line("u1", "2009-01-01T10:00:00Z", "b"),
            line("u1", "2009-01-01T09:00:00Z", "a"),
        ]
        .concat();
        let d = import_lastfm(&history, SessionOptions::default());
        let playlists: Vec<(&str, Vec<&str>)> = d
            .playlists
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.tracks
                        .iter()
                        .map(|&i| d.tracks[i as usize].id.as_str())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            playlists,
            [
                ("lastfm:u1@2009-01-01T10:00:00Z", vec!["b", "c"]),
                ("lastfm:u2@2009-01-01T09:59:00Z", vec!["a", "c"])
            ]
        );
        let ids: Vec<&str> = d.tracks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            ["b", "c", "a"],
            "tracks of dropped sessions stay out of the catalogue"
        );

        let d = import_lastfm(
            &history,
            SessionOptions {
                gap_seconds: 3600,
                min_tracks: 1,
            },
        );
        let lengths: Vec<usize> = d.playlists.iter().map(|p| p.tracks.len()).collect();
        assert_eq!(lengths, [4, 2]);
        let d = import_lastfm(
            &history,
            SessionOptions {
                gap_seconds: 1800,
                min_tracks: 3,
            },
        );
        assert!(d.playlists.is_empty());
    }

    #[test]
    fn equal_timestamps_keep_play_order_and_repeats_count_once() {
        let newest_first = [
            line("u", "2009-01-01T10:05:00Z", "c"),
            line("u", "2009-01-01T10:00:00Z", "b"),
            line("u", "2009-01-01T10:00:00Z", "a"),
            line("u", "2009-01-01T10:00:00Z", "a"),
        ]
        .concat();
        let d = import_lastfm(&newest_first, SessionOptions::default());
        let order: Vec<&str> = d.playlists[0]
            .tracks
            .iter()
            .map(|&i| d.tracks[i as usize].id.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn a_header_is_skipped_and_missing_mbids_fall_back_to_names() {
        let content = "user\ttimestamp\tartist_id\tartist\tartist_id\tsong\n\
            u\t2009-01-01T10:00:00Z\t\tDeep Dish\t\tFlashdance\n\
            u\t2009-01-01T10:04:00Z\tx\tDeep Dish\tmbid-1\tDreams\n";
        let d = import_lastfm(content, SessionOptions::default());
        let ids: Vec<&str> = d.tracks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["Deep Dish — Flashdance", "mbid-1"]);
        assert_eq!(
            (d.tracks[1].title.as_str(), d.tracks[1].artist.as_str()),
            ("Dreams", "Deep Dish")
        );
    }

    #[test]
    fn every_error_names_file_line_and_field() {
        let ok = line("u", "2009-01-01T10:00:00Z", "a");
        let cases = [
            (
                "#id\tgender\tage\tcountry\tregistered\nuser_000001\tm\t\tJapan\tAug 13, 2006\n"
                    .to_owned(),
                "h.tsv is the Last.fm-1K user profile table",
            ),
            (
                format!("{ok}u\t2009-01-01T10:00:00Z\tx\n"),
                "h.tsv line 2: the line has 3 fields, but this format has 6 (userid, timestamp,",
            ),
            (
                format!("{ok}u\t2009-01-01 10:00:00\t\tA\tm\tT\n"),
                "h.tsv line 2: field \"timestamp\": \"2009-01-01 10:00:00\" is not a UTC time like 2009-05-04T23:08:57Z (it must be 20 characters long)",
            ),
            (
                format!("{ok}\t2009-01-01T10:00:00Z\t\tA\tm\tT\n"),
                "h.tsv line 2: field \"userid\": is empty",
            ),
            (
                format!("{ok}u\t2009-01-01T10:00:00Z\t\tA\t\t\n"),
                "h.tsv line 2: field \"track-name\": is empty",
            ),
            (
                format!(
                    "{ok}u\t2009-01-01T10:00:00Z\t\tA\t{}\tT\n",
                    "m".repeat(1025)
                ),
                "h.tsv line 2: field \"track-mbid\": is 1025 bytes long",
            ),
            (
                format!(
                    "{ok}u\t2009-01-01T10:00:00Z\t\t{}\tm\tT\n",
                    "a".repeat(1025)
                ),
                "h.tsv line 2: field \"artist-name\": is 1025 bytes long",
            ),
            (
                format!("{ok}u\t2009-01-01T10:00:00Z\t\t{}\t\tT\n", "a".repeat(1020)),
                "field \"artist-name + track-name\": makes a track id of 1026 bytes",
            ),
            (
                format!(
                    "{ok}{}\t2009-01-01T10:00:00Z\t\tA\tm\tT\n",
                    "u".repeat(1000)
                ),
                "h.tsv line 2: field \"userid\": makes a session id of 1028 bytes",
            ),
        ];
        for (content, expected) in cases {
            let dir = fixture(&[("h.tsv", &content)]);
            let err = import_error(dir.path(), &["h.tsv"], None);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn overlong_sessions_are_refused() {
        let same_time = line("u", "2009-01-01T10:00:00Z", "a");
        let history: String = (0..=MAX_PLAYLIST_TRACKS)
            .map(|i| same_time.replace("\ta\t", &format!("\t{i}\t")))
            .collect();
        let dir = fixture(&[("h.tsv", &history)]);
        let err = import_error(dir.path(), &["h.tsv"], None);
        assert!(
            err.contains("h.tsv line 1: playlist \"lastfm:u@2009-01-01T10:00:00Z\" has more than 100000 tracks, the limit per playlist; split it, or import with a shorter session gap"),
            "{err}"
        );
    }
}
