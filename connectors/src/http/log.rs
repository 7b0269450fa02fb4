//! The durable, segmented event log behind an `http` source.
//!
//! One directory per source holds segment files named after the offset of their first event
//! (`00000000000000000000.log`). A segment is a sequence of frames, one per accepted request:
//!
//! ```text
//! magic u32 | payload length u32 | first offset u64 | event count u32 | crc32 of payload u32
//! payload: the request's events as one Arrow IPC stream (one record batch)
//! ```
//!
//! Offsets count events, not bytes, like a Kafka partition's: the first event of the log is
//! offset 0 and a frame holds offsets `[first, first + count)`.
//!
//! One writer thread owns the files. Requests queue on a bounded channel; the writer takes
//! every request waiting, writes their frames with one `write`, syncs the segment once
//! (`fdatasync`) and only then publishes the new end and answers each request — so every
//! acknowledged event is on disk, and concurrent requests share one sync (group commit).
//! Readers see only the published end, never bytes that are not yet synced.
//!
//! Recovery scans the segments at open: the last one may end in a torn frame (a crash while
//! writing, never acknowledged), which is cut off. Retention deletes whole closed segments
//! whose last write is older than the retention period; the log refuses appends that would
//! make it larger than its maximum size until retention frees space.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use tokio::sync::oneshot;

use super::IngestError;
use crate::source::ConnectorError;

const MAGIC: u32 = 0x4652_4c31; // "FRL1"
const HEADER_BYTES: usize = 24;
/// A sparse index entry is kept about every this many bytes of a segment, so finding an
/// offset reads at most this much of the file before the wanted frame.
const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;
/// At most this many bytes of requests are written by one group commit.
const GROUP_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How often an idle writer checks retention.
const RETENTION_CHECK: Duration = Duration::from_secs(5);
/// A frame payload larger than this is corruption, not data (bodies are far smaller).
const FRAME_PAYLOAD_MAX: u32 = 1 << 30;

/// Sizes and limits of one log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogSettings {
    /// A segment is closed and a new one started when a frame would make it larger.
    pub segment_bytes: u64,
    /// Appends that would make the retained log larger are refused (the log is full).
    pub max_log_bytes: u64,
    /// Closed segments whose last write is older than this are deleted.
    pub retention: Duration,
    /// Requests that may wait for the writer; beyond them the log is busy.
    pub queue_requests: usize,
}

/// One segment as readers and the writer see it.
#[derive(Debug, Clone)]
struct Segment {
    base: i64,
    /// One past the last offset in the segment.
    end: i64,
    bytes: u64,
    path: PathBuf,
    /// (first offset of a frame, its position in the file), sparse.
    index: Vec<(i64, u64)>,
    last_write: SystemTime,
}

/// What is published: only synced frames are in it.
#[derive(Debug)]
struct Published {
    segments: Vec<Segment>,
    /// Set when a write or sync failed: the log takes no more appends until a restart
    /// recovers it from what is on disk.
    failed: Option<String>,
}

impl Published {
    fn start(&self) -> i64 {
        self.segments.first().map(|s| s.base).unwrap_or(0)
    }

    fn end(&self) -> i64 {
        self.segments.last().map(|s| s.end).unwrap_or(0)
    }

    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    dir: PathBuf,
    published: Mutex<Published>,
    /// How far the active segment (by base offset) is known to be on disk, and how many
    /// syncs were made: what a power failure would keep, and how well requests share syncs.
    synced: Mutex<(i64, u64)>,
    syncs: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request's events, encoded, waiting for the writer.
struct Append {
    payload: Vec<u8>,
    crc: u32,
    count: u32,
    reply: oneshot::Sender<Result<i64, IngestError>>,
}

/// The log of one source: appends go to its writer thread, reads go to the files.
#[derive(Debug)]
pub(crate) struct EventLog {
    shared: Arc<Shared>,
    sender: SyncSender<Append>,
    settings: LogSettings,
}

fn storage_error(name: &str, path: &Path, err: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Storage {
        source_name: name.to_string(),
        path: path.display().to_string(),
        message: err.to_string(),
    }
}

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Makes a directory entry (a new or deleted file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl EventLog {
    /// Opens (or creates) the log in `dir`, recovering what is on disk.
    pub(crate) fn open(
        name: &str,
        dir: &Path,
        settings: LogSettings,
    ) -> Result<Self, ConnectorError> {
        let err = |e: io::Error| storage_error(name, dir, e);
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(err)?;
        if created {
            // The new directories themselves must survive a crash.
            let mut path = dir.to_path_buf();
            while let Some(parent) = path.parent() {
                if sync_dir(parent).is_err() {
                    break;
                }
                if parent.file_name().is_some_and(|n| n == "sources") {
                    break;
                }
                path = parent.to_path_buf();
            }
        }
        let mut segments = recover(name, dir)?;
        if segments.is_empty() {
            let path = segment_path(dir, 0);
            File::create(&path).map_err(err)?;
            sync_dir(dir).map_err(err)?;
            segments.push(Segment {
                base: 0,
                end: 0,
                bytes: 0,
                path,
                index: Vec::new(),
                last_write: SystemTime::now(),
            });
        }
        let active = segments.last().cloned().expect("at least one segment");
        let file = OpenOptions::new()
            .append(true)
            .open(&active.path)
            .map_err(err)?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            synced: Mutex::new((active.base, active.bytes)),
            syncs: AtomicU64::new(0),
            published: Mutex::new(Published {
                segments,
                failed: None,
            }),
        });
        let (sender, receiver) = mpsc::sync_channel(settings.queue_requests.max(1));
        let writer = Writer {
            shared: shared.clone(),
            settings,
            file,
            active,
        };
        std::thread::Builder::new()
            .name(format!("freshet-log-{name}"))
            .spawn(move || writer.run(receiver))
            .map_err(err)?;
        Ok(Self {
            shared,
            sender,
            settings,
        })
    }

    /// The retained offsets `[start, end)`; `end` is the durable end.
    pub(crate) fn range(&self) -> (i64, i64) {
        let published = self.shared.lock();
        (published.start(), published.end())
    }

    /// Bytes retained on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.shared.lock().bytes()
    }

    pub(crate) fn settings(&self) -> LogSettings {
        self.settings
    }

    /// Syncs made so far (each shared by every request of its group).
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// The active segment's path and how many of its bytes are known to be on disk.
    #[cfg(test)]
    pub(crate) fn synced(&self) -> (PathBuf, u64) {
        let (base, bytes) = *self.shared.synced.lock().unwrap_or_else(|p| p.into_inner());
        (segment_path(&self.shared.dir, base), bytes)
    }

    /// Appends one encoded request of `count` events; answers with its first offset once the
    /// events are synced to disk.
    pub(crate) async fn append(&self, payload: Vec<u8>, count: u32) -> Result<i64, IngestError> {
        let frame_bytes = (HEADER_BYTES + payload.len()) as u64;
        if frame_bytes > self.settings.max_log_bytes {
            return Err(IngestError::TooLarge {
                bytes: frame_bytes,
                max_bytes: self.settings.max_log_bytes,
            });
        }
        if let Some(reason) = &self.shared.lock().failed {
            return Err(IngestError::Unavailable(reason.clone()));
        }
        let crc = crc32fast::hash(&payload);
        let (reply, answer) = oneshot::channel();
        let request = Append {
            payload,
            crc,
            count,
            reply,
        };
        match self.sender.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(IngestError::Busy { retry_after_s: 1 }),
            Err(TrySendError::Disconnected(_)) => {
                return Err(IngestError::Unavailable(
                    "the log's writer stopped".to_string(),
                ))
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(IngestError::Unavailable(
                "the log's writer stopped".to_string(),
            ))
        })
    }

    /// Reads the events `[start, end)` (clamped to what is retained), calling `emit` with the
    /// offset of each slice's first event; `emit` returns false to stop. Blocking.
    pub(crate) fn read(
        &self,
        start: i64,
        end: i64,
        mut emit: impl FnMut(i64, RecordBatch) -> bool,
    ) -> Result<(), ConnectorError> {
        let segments: Vec<Segment> = {
            let published = self.shared.lock();
            let end = end.min(published.end());
            published
                .segments
                .iter()
                .filter(|s| s.end > start && s.base < end && s.end > s.base)
                .cloned()
                .collect()
        };
        for segment in segments {
            let position = segment
                .index
                .iter()
                .take_while(|(offset, _)| *offset <= start)
                .last()
                .map(|(_, position)| *position)
                .unwrap_or(0);
            let file = match File::open(&segment.path) {
                Ok(file) => file,
                // Deleted by retention since the list was taken: those events are gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage_error(&self.shared.name, &segment.path, e)),
            };
            let stop = end.min(segment.end);
            if !read_segment(file, position, start, stop, &mut emit)
                .map_err(|e| storage_error(&self.shared.name, &segment.path, e))?
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn retry_after(published: &Published, retention: Duration) -> u64 {
    if published.segments.len() < 2 {
        return 60;
    }
    let expires = published.segments[0].last_write + retention;
    expires
        .duration_since(SystemTime::now())
        .map(|d| d.as_secs() + 1)
        .unwrap_or(1)
        .clamp(1, 3600)
}

/// Reads frames from `position` on, emitting the events in `[start, stop)`. False when
/// `emit` asked to stop.
fn read_segment(
    file: File,
    position: u64,
    start: i64,
    stop: i64,
    emit: &mut impl FnMut(i64, RecordBatch) -> bool,
) -> io::Result<bool> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    reader.seek(SeekFrom::Start(position))?;
    let mut header = [0u8; HEADER_BYTES];
    loop {
        reader.read_exact(&mut header)?;
        let frame = Header::parse(&header)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad frame header"))?;
        if frame.first >= stop {
            return Ok(true);
        }
        let last = frame.first + i64::from(frame.count);
        if last <= start {
            reader.seek_relative(i64::from(frame.length))?;
            continue;
        }
        let mut payload = vec![0u8; frame.length as usize];
        reader.read_exact(&mut payload)?;
        let batch = decode_payload(&payload)?;
        let from = (start.max(frame.first) - frame.first) as usize;
        let to = (stop.min(last) - frame.first) as usize;
        if !emit(frame.first + from as i64, batch.slice(from, to - from)) {
            return Ok(false);
        }
        if last >= stop {
            return Ok(true);
        }
    }
}

fn decode_payload(payload: &[u8]) -> io::Result<RecordBatch> {
    let invalid = |e: arrow::error::ArrowError| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut reader = arrow::ipc::reader::StreamReader::try_new(io::Cursor::new(payload), None)
        .map_err(invalid)?;
    match reader.next() {
        Some(batch) => batch.map_err(invalid),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a frame without a batch",
        )),
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    length: u32,
    first: i64,
    count: u32,
    crc: u32,
}

impl Header {
    fn parse(bytes: &[u8; HEADER_BYTES]) -> Option<Self> {
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let first = i64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let header = Header {
            length: u32_at(4),
            first,
            count: u32_at(16),
            crc: u32_at(20),
        };
        (u32_at(0) == MAGIC
            && header.length <= FRAME_PAYLOAD_MAX
            && header.count > 0
            && header.first >= 0)
            .then_some(header)
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
    }
}

/// Lists and checks the segments on disk; cuts a torn end off the last one.
fn recover(name: &str, dir: &Path) -> Result<Vec<Segment>, ConnectorError> {
    let err = |e: io::Error| storage_error(name, dir, e);
    let mut bases: Vec<i64> = fs::read_dir(dir)
        .map_err(err)?
        .filter_map(|entry| {
            let file_name = entry.ok()?.file_name();
            let stem = file_name.to_str()?.strip_suffix(".log")?.to_string();
            stem.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (i, base) in bases.iter().enumerate() {
        let path = segment_path(dir, *base);
        if let Some(previous) = segments.last() {
            if previous.end != *base {
                return Err(storage_error(
                    name,
                    &path,
                    format!(
                        "the log has a gap: the previous segment ends at offset {}, this one starts at {base}",
                        previous.end
                    ),
                ));
            }
        }
        let last = i + 1 == bases.len();
        let segment =
            scan_segment(&path, *base, last).map_err(|e| storage_error(name, &path, e))?;
        segments.push(segment);
    }
    Ok(segments)
}

/// Walks a segment's frames. The last segment's frames are checked whole (checksum) and a
/// torn end is cut off; earlier segments were synced before the next one began, so their
/// headers are enough.
fn scan_segment(path: &Path, base: i64, last: bool) -> io::Result<Segment> {
    let file = OpenOptions::new().read(true).write(last).open(path)?;
    let length = file.metadata()?.len();
    let last_write = file
        .metadata()?
        .modified()
        .unwrap_or_else(|_| SystemTime::now());
    let mut reader = BufReader::with_capacity(256 * 1024, &file);
    let mut position = 0u64;
    let mut next = base;
    let mut index = Vec::new();
    let mut last_indexed: Option<u64> = None;
    let mut header = [0u8; HEADER_BYTES];
    let mut payload = Vec::new();
    while position + HEADER_BYTES as u64 <= length {
        reader.read_exact(&mut header)?;
        let Some(frame) = Header::parse(&header) else {
            break;
        };
        let frame_end = position + HEADER_BYTES as u64 + u64::from(frame.length);
        if frame.first != next || frame_end > length {
            break;
        }
        if last {
            payload.resize(frame.length as usize, 0);
            reader.read_exact(&mut payload)?;
            if crc32fast::hash(&payload) != frame.crc {
                break;
            }
        } else {
            reader.seek_relative(i64::from(frame.length))?;
        }
        if last_indexed.is_none_or(|p| position - p >= INDEX_INTERVAL_BYTES) {
            index.push((frame.first, position));
            last_indexed = Some(position);
        }
        next = frame.first + i64::from(frame.count);
        position = frame_end;
    }
    if position < length {
        if !last {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a closed segment is damaged at byte {position} of {length}"),
            ));
        }
        // A frame that was being written when the server stopped: never acknowledged.
        tracing::warn!(
            path = %path.display(),
            kept_bytes = position,
            dropped_bytes = length - position,
            "cutting an unfinished write off the end of an event log"
        );
        file.set_len(position)?;
        file.sync_all()?;
    }
    Ok(Segment {
        base,
        end: next,
        bytes: position,
        path: path.to_path_buf(),
        index,
        last_write,
    })
}

/// A request written in the current group: where to answer, and its first offset.
type Written = (oneshot::Sender<Result<i64, IngestError>>, i64);

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    settings: LogSettings,
    file: File,
    /// The active segment as written and synced by this thread (published after each group).
    active: Segment,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Append>) {
        loop {
            let first = match receiver.recv_timeout(RETENTION_CHECK) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    self.enforce_retention();
                    continue;
                }
                // The source was dropped.
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut group_bytes = first.payload.len();
            let mut group = vec![first];
            // Everything that queued while the previous group was syncing shares this sync.
            while group_bytes < GROUP_BYTES_MAX {
                match receiver.try_recv() {
                    Ok(request) => {
                        group_bytes += request.payload.len();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            // Before the commit, so space retention frees is there for this group.
            self.enforce_retention();
            self.commit(group);
        }
    }

    /// Writes, syncs and publishes one group; answers every request in it.
    fn commit(&mut self, group: Vec<Append>) {
        if let Some(reason) = self.shared.lock().failed.clone() {
            for request in group {
                let _ = request
                    .reply
                    .send(Err(IngestError::Unavailable(reason.clone())));
            }
            return;
        }
        let (closed_bytes, retry_after_s) = {
            let published = self.shared.lock();
            let closed: u64 = published
                .segments
                .iter()
                .filter(|s| s.base != self.active.base)
                .map(|s| s.bytes)
                .sum();
            (closed, retry_after(&published, self.settings.retention))
        };
        let mut closed_now: Vec<Segment> = Vec::new();
        let mut accepted: Vec<Written> = Vec::new();
        let result = self.write_group(
            group,
            (closed_bytes, retry_after_s),
            &mut closed_now,
            &mut accepted,
        );
        if let Err(err) = result {
            self.fail(err, accepted);
            return;
        }
        self.active.last_write = SystemTime::now();
        {
            let mut published = self.shared.lock();
            for closed in closed_now {
                match published
                    .segments
                    .iter_mut()
                    .find(|s| s.base == closed.base)
                {
                    Some(segment) => *segment = closed,
                    None => published.segments.push(closed),
                }
            }
            match published
                .segments
                .iter_mut()
                .find(|s| s.base == self.active.base)
            {
                Some(segment) => *segment = self.active.clone(),
                None => published.segments.push(self.active.clone()),
            }
        }
        for (reply, first) in accepted {
            let _ = reply.send(Ok(first));
        }
    }

    /// Writes the frames of `group` (refusing those that do not fit the log) and syncs them;
    /// `closed` is the bytes in closed segments and the Retry-After for a full log.
    fn write_group(
        &mut self,
        group: Vec<Append>,
        (closed_bytes, retry_after_s): (u64, u64),
        closed_now: &mut Vec<Segment>,
        accepted: &mut Vec<Written>,
    ) -> io::Result<()> {
        let mut buffer: Vec<u8> = Vec::new();
        for request in group {
            let frame_bytes = (HEADER_BYTES + request.payload.len()) as u64;
            let closed: u64 = closed_bytes + closed_now.iter().map(|s| s.bytes).sum::<u64>();
            let active_bytes = self.active.bytes + buffer.len() as u64;
            if closed + active_bytes + frame_bytes > self.settings.max_log_bytes {
                let _ = request.reply.send(Err(IngestError::LogFull {
                    max_log_bytes: self.settings.max_log_bytes,
                    retry_after_s,
                }));
                continue;
            }
            if active_bytes > 0 && active_bytes + frame_bytes > self.settings.segment_bytes {
                self.write_buffer(&mut buffer)?;
                self.sync()?;
                closed_now.push(self.roll()?);
            }
            let first = self.active.end;
            let position = self.active.bytes + buffer.len() as u64;
            let last_indexed = self.active.index.last().map(|(_, p)| *p);
            if last_indexed.is_none_or(|p| position - p >= INDEX_INTERVAL_BYTES) {
                self.active.index.push((first, position));
            }
            Header {
                length: request.payload.len() as u32,
                first,
                count: request.count,
                crc: request.crc,
            }
            .write(&mut buffer);
            buffer.extend_from_slice(&request.payload);
            self.active.end += i64::from(request.count);
            accepted.push((request.reply, first));
        }
        self.write_buffer(&mut buffer)?;
        // The durability point: nothing is acknowledged before this returns.
        self.sync()
    }

    /// Makes everything written to the active segment durable.
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        *self.shared.synced.lock().unwrap_or_else(|p| p.into_inner()) =
            (self.active.base, self.active.bytes);
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write_buffer(&mut self, buffer: &mut Vec<u8>) -> io::Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(buffer)?;
        self.active.bytes += buffer.len() as u64;
        buffer.clear();
        Ok(())
    }

    /// Starts a new segment after the active one (already synced); returns the closed one.
    fn roll(&mut self) -> io::Result<Segment> {
        let base = self.active.end;
        let path = segment_path(&self.shared.dir, base);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(&self.shared.dir)?;
        let mut closed = std::mem::replace(
            &mut self.active,
            Segment {
                base,
                end: base,
                bytes: 0,
                path,
                index: Vec::new(),
                last_write: SystemTime::now(),
            },
        );
        closed.last_write = SystemTime::now();
        self.file = file;
        *self.shared.synced.lock().unwrap_or_else(|p| p.into_inner()) = (base, 0);
        Ok(closed)
    }

    /// After a failed write or sync, what reached the disk is unknown (a failed fsync may
    /// have dropped the pages): no more appends until a restart recovers from the files.
    fn fail(&mut self, err: io::Error, accepted: Vec<Written>) {
        let reason = format!(
            "writing the event log of source {} failed: {err}; restart the server to recover",
            self.shared.name
        );
        tracing::error!("{reason}");
        self.shared.lock().failed = Some(reason.clone());
        for (reply, _) in accepted {
            let _ = reply.send(Err(IngestError::Unavailable(reason.clone())));
        }
    }

    /// Deletes closed segments older than the retention period.
    fn enforce_retention(&mut self) {
        let now = SystemTime::now();
        loop {
            let expired = {
                let published = self.shared.lock();
                match published.segments.first() {
                    Some(oldest)
                        if published.segments.len() > 1
                            && oldest.base != self.active.base
                            && oldest.last_write + self.settings.retention <= now =>
                    {
                        Some(oldest.path.clone())
                    }
                    _ => None,
                }
            };
            let Some(path) = expired else {
                return;
            };
            // Unpublished first, so no new read starts on it; reads already open keep
            // their file handle.
            self.shared.lock().segments.remove(0);
            if let Err(err) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "could not delete an expired log segment");
            }
            let _ = sync_dir(&self.shared.dir);
        }
    }
}
