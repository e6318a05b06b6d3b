//! Pairs server responses with the client messages that caused them, so each statement's
//! result can be summarised and gateway-made responses (refusals) reach the client in
//! exactly the place the server's own response would have.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use gatehouse_wire_pg::backend::{self, Backend};

use crate::masking::Shape;
use crate::prepared::{Op, Pending, Prepared, Settled};
use crate::recording::{Output, Recorder};

/// One statement execution in flight.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    /// Ledger index of the `command` entry.
    pub command: u64,
    pub started: Instant,
    pub rows: u64,
    pub bytes: u64,
    pub tags: Vec<String>,
    pub error: Option<String>,
    /// Never ran: the server discarded it after an earlier error in the same pipeline.
    pub skipped: bool,
    /// What of its result data was recorded.
    pub output: Output,
    /// How its results are masked, and what was.
    pub shape: Shape,
    /// The statement as decided: its command tags are checked against it, and its PREPARE
    /// and DEALLOCATE statements change the session's names once they have run.
    pub decided: Option<Arc<Prepared>>,
}

impl Work {
    pub(crate) fn new(command: u64) -> Self {
        Work {
            command,
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            tags: Vec::new(),
            error: None,
            skipped: false,
            output: Output::default(),
            shape: Shape::default(),
            decided: None,
        }
    }

    pub(crate) fn with_shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }

    pub(crate) fn deciding(mut self, decided: Arc<Prepared>) -> Self {
        self.decided = Some(decided);
        self
    }
}

/// Whose description a RowDescription is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Describes {
    /// The statement at this place in the queue (a simple query, or the Execute right
    /// after a Describe); true when it describes a prepared statement, whose formats are
    /// only known from the Bind.
    Work(usize, bool),
    /// A prepared statement, described ahead of the Executes that will use it.
    Statement(String),
    Nothing,
}

/// What the server owes the client for a message sent to it.
#[derive(Debug)]
pub(crate) enum Expect {
    /// Parse, Bind and Close: the change each makes to the session's names.
    Parse(Op),
    Bind(Op),
    /// Describe of a statement (its name) or of a portal (`None`).
    Describe(Option<String>),
    Close(Op),
    Sync,
    /// Simple query or function call: done at ReadyForQuery.
    Query(Work),
    /// Extended-protocol execute: done at CommandComplete, EmptyQuery, PortalSuspended or error.
    Execute(Work),
    /// A message the gateway refused. The server got a stand-in it must fail (so it aborts
    /// the transaction or skips to Sync exactly as after a real error); its error is
    /// replaced by `reply`, the gateway's refusal. A refused simple query or function call
    /// (`query`) then ends at the server's own ReadyForQuery.
    Refused {
        reply: Vec<u8>,
        query: bool,
    },
}

/// The queue of owed responses for one session.
#[derive(Debug)]
pub(crate) struct Tracker {
    queue: VecDeque<Expect>,
    /// Transaction status from the last ReadyForQuery (`I`, `T` or `E`).
    pub status: u8,
    /// The server hit an error in the extended protocol and discards every message until
    /// the next Sync, including ones the client sends after the error arrived.
    discarding: bool,
    /// Statements the server discarded before they were queued here.
    orphans: Vec<Work>,
    /// What the server confirmed or refused of the session's names, in its order.
    settled: Vec<Settled>,
    /// Changes sent while the server discards (they never take effect): kept until the
    /// Sync so the statements after them in the segment are still read, and recorded as
    /// skipped, as the client meant them.
    discarded: Vec<Op>,
}

impl Tracker {
    pub(crate) fn new(status: u8) -> Self {
        Tracker {
            queue: VecDeque::new(),
            status,
            discarding: false,
            orphans: Vec::new(),
            settled: Vec::new(),
            discarded: Vec::new(),
        }
    }

    /// Nothing is owed: every message sent has been answered, and every setting the server
    /// changed has been reported.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// What the server has confirmed or refused of the session's names since last asked.
    pub(crate) fn take_settled(&mut self) -> std::vec::Drain<'_, Settled> {
        self.settled.drain(..)
    }

    /// Changes to the session's names sent and not yet answered, oldest first.
    pub(crate) fn pending(&self) -> impl Iterator<Item = Pending<'_>> {
        self.queue
            .iter()
            .flat_map(|expect| {
                let (op, work, boundary) = match expect {
                    Expect::Parse(op) | Expect::Bind(op) | Expect::Close(op) => {
                        (Some(op), None, false)
                    }
                    Expect::Query(work) => (None, work.decided.as_deref(), true),
                    Expect::Execute(work) => (None, work.decided.as_deref(), false),
                    Expect::Sync => (None, None, true),
                    Expect::Describe(_) => (None, None, false),
                    Expect::Refused { query, .. } => (None, None, *query),
                };
                let sql = work.into_iter().flat_map(|text| {
                    text.analysis
                        .statements
                        .iter()
                        .filter(|s| s.prepared.is_some())
                        .map(move |s| Pending::Sql(text, s))
                });
                op.map(Pending::Op)
                    .into_iter()
                    .chain(sql)
                    .chain(boundary.then_some(Pending::Boundary))
            })
            .chain(self.discarded.iter().map(Pending::Op))
    }

    /// Records what the server owes for a message just sent to it. While the server is
    /// discarding after an error, messages before the next Sync get no answer at all.
    pub(crate) fn push(&mut self, expect: Expect) {
        if self.discarding {
            match expect {
                Expect::Sync => {
                    self.discarding = false;
                    self.discarded.clear();
                    self.queue.push_back(Expect::Sync);
                }
                Expect::Parse(op) | Expect::Bind(op) | Expect::Close(op) => {
                    self.discarded.push(op);
                }
                Expect::Execute(mut work) | Expect::Query(mut work) => {
                    work.skipped = true;
                    self.orphans.push(work);
                }
                // Describe: discarded. A gateway refusal of a message the server would have
                // discarded anyway must not be answered either.
                _ => {}
            }
            return;
        }
        self.queue.push_back(expect);
    }

    /// Moves statements the server discarded on arrival into `done`.
    pub(crate) fn take_orphans(&mut self, done: &mut Vec<Work>) {
        done.append(&mut self.orphans);
    }

    /// Whether the next ErrorResponse answers the stand-in of a refused message (and is to
    /// be replaced by the refusal rather than passed on).
    pub(crate) fn refusal_due(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Refused { reply, .. }) if !reply.is_empty())
    }

    /// Accounts for one server frame. Result data goes to `recorder`, finished statements
    /// to `done`; gateway responses that became due go to `emit` (to be sent right after
    /// this frame).
    pub(crate) fn on_server(
        &mut self,
        frame: &[u8],
        done: &mut Vec<Work>,
        emit: &mut Vec<u8>,
        recorder: &mut Recorder,
    ) {
        if recorder.enabled() && matches!(frame.first(), Some(b'T' | b'D' | b'd')) {
            self.record(frame, recorder);
        }
        let message = match backend::parse(frame) {
            Ok(m) => m,
            Err(_) => return,
        };
        match message {
            Backend::DataRow { .. } | Backend::CopyData(_) => {
                if let Some(work) = self.front_work() {
                    work.bytes += frame.len() as u64;
                }
            }
            Backend::CommandComplete(tag) => match self.queue.front_mut() {
                Some(Expect::Execute(work)) | Some(Expect::Query(work)) => {
                    work.rows += backend::rows_from_tag(tag).unwrap_or(0);
                    work.tags.push(tag.to_string());
                    if matches!(self.queue.front(), Some(Expect::Execute(_))) {
                        self.finish_front(done);
                    }
                }
                _ => {}
            },
            Backend::EmptyQuery | Backend::PortalSuspended => {
                if matches!(self.queue.front(), Some(Expect::Execute(_))) {
                    self.finish_front(done);
                }
            }
            Backend::Error { code, .. } => match self.queue.front_mut() {
                // The stand-in for a refused message failed, as it must: the client gets
                // the refusal in its place (the caller did not pass the server's error on).
                Some(Expect::Refused { reply, query }) => {
                    emit.extend_from_slice(&std::mem::take(reply));
                    if !*query {
                        self.queue.pop_front();
                        self.skip_to_sync(None, done);
                    }
                }
                _ => self.on_error(code, done),
            },
            Backend::ReadyForQuery(status) => {
                self.status = status;
                if status == b'I' {
                    self.settled.push(Settled::TransactionEnded);
                }
                // A ReadyForQuery always answers a Sync or a simple query. Anything still
                // ahead of that was never answered: drop it rather than let the queue (and
                // any refusal waiting in it) fall out of step with the server.
                loop {
                    match self.queue.front_mut() {
                        Some(Expect::Query(_)) => {
                            self.finish_front(done);
                            break;
                        }
                        Some(Expect::Sync) | Some(Expect::Refused { query: true, .. }) => {
                            self.queue.pop_front();
                            break;
                        }
                        Some(Expect::Execute(work)) => {
                            work.skipped = true;
                            self.finish_front(done);
                        }
                        None => break,
                        Some(_) => {
                            self.queue.pop_front();
                        }
                    }
                }
            }
            Backend::Other(tag) => {
                let expected = match tag {
                    b'1' => matches!(self.queue.front(), Some(Expect::Parse(_))),
                    b'2' => matches!(self.queue.front(), Some(Expect::Bind(_))),
                    b'3' => matches!(self.queue.front(), Some(Expect::Close(_))),
                    // RowDescription or NoData end a Describe; inside a simple query a
                    // RowDescription is just part of the results.
                    b'T' | b'n' => matches!(self.queue.front(), Some(Expect::Describe(_))),
                    _ => false,
                };
                // The answered message leaves the queue; a change it made now counts.
                if expected
                    && let Some(Expect::Parse(op) | Expect::Bind(op) | Expect::Close(op)) =
                        self.queue.pop_front()
                {
                    self.settled.push(Settled::Applied(op));
                }
            }
            Backend::BackendKeyData { .. } => {}
        }
    }

    /// An error ends the current message; in the extended protocol the server then skips
    /// everything up to the next Sync, so those statements never run.
    fn on_error(&mut self, code: &str, done: &mut Vec<Work>) {
        // An error during Parse, Bind or Describe belongs to the Execute that follows them.
        let mut carry = None;
        match self.queue.front_mut() {
            Some(Expect::Query(work)) => {
                work.error = Some(code.to_string());
                return;
            }
            Some(Expect::Execute(work)) => {
                work.error = Some(code.to_string());
                self.finish_front(done);
            }
            Some(Expect::Sync) | None => return,
            Some(_) => {
                if let Some(Expect::Parse(op) | Expect::Bind(op) | Expect::Close(op)) =
                    self.queue.pop_front()
                {
                    self.settled.push(Settled::Failed(op));
                }
                carry = Some(code.to_string());
            }
        }
        self.skip_to_sync(carry, done);
    }

    /// After an error in the extended protocol the server skips everything up to the next
    /// Sync; `carry` is the error of a Parse, Bind or Describe, which belongs to the
    /// Execute after it.
    fn skip_to_sync(&mut self, mut carry: Option<String>, done: &mut Vec<Work>) {
        loop {
            match self.queue.front_mut() {
                Some(Expect::Sync) => return,
                None => {
                    // The Sync has not been sent yet: what comes before it is discarded too.
                    self.discarding = true;
                    return;
                }
                Some(Expect::Execute(work)) | Some(Expect::Query(work)) => {
                    match carry.take() {
                        Some(code) => work.error = Some(code),
                        None => work.skipped = true,
                    }
                    self.finish_front(done);
                }
                Some(_) => {
                    self.queue.pop_front();
                }
            }
        }
    }

    /// Hands a result frame to the recorder under the statement it belongs to. A
    /// RowDescription answering a Describe belongs to the Execute right after it: that is
    /// what the client pairs it with.
    fn record(&mut self, frame: &[u8], recorder: &mut Recorder) {
        let owner = match self.queue.front() {
            Some(Expect::Query(_)) | Some(Expect::Execute(_)) => 0,
            Some(Expect::Describe(_))
                if frame[0] == b'T' && matches!(self.queue.get(1), Some(Expect::Execute(_))) =>
            {
                1
            }
            _ => return,
        };
        if let Some(Expect::Query(work)) | Some(Expect::Execute(work)) = self.queue.get_mut(owner) {
            recorder.record(work.command, &mut work.output, frame);
        }
    }

    /// Who a RowDescription arriving now describes.
    pub(crate) fn describes(&self) -> Describes {
        match self.queue.front() {
            Some(Expect::Query(_)) | Some(Expect::Execute(_)) => Describes::Work(0, false),
            Some(Expect::Describe(of)) if matches!(self.queue.get(1), Some(Expect::Execute(_))) => {
                Describes::Work(1, of.is_some())
            }
            Some(Expect::Describe(Some(name))) => Describes::Statement(name.clone()),
            _ => Describes::Nothing,
        }
    }

    /// The statement at place `at` in the queue.
    pub(crate) fn work_at(&mut self, at: usize) -> Option<&mut Work> {
        match self.queue.get_mut(at) {
            Some(Expect::Query(work)) | Some(Expect::Execute(work)) => Some(work),
            _ => None,
        }
    }

    pub(crate) fn front_work(&mut self) -> Option<&mut Work> {
        match self.queue.front_mut() {
            Some(Expect::Query(work)) | Some(Expect::Execute(work)) => Some(work),
            _ => None,
        }
    }

    fn finish_front(&mut self, done: &mut Vec<Work>) {
        if let Some(Expect::Query(work)) | Some(Expect::Execute(work)) = self.queue.pop_front() {
            if let Some(prepared) = &work.decided
                && !work.tags.is_empty()
            {
                self.settled.push(Settled::Ran {
                    prepared: prepared.clone(),
                    completed: work.tags.len(),
                });
            }
            done.push(work);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_wire_pg::frontend::frame;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame(tag, body, &mut out);
        out
    }

    fn test_parse() -> Op {
        Op::Parse {
            name: String::new(),
            prepared: Arc::new(Prepared::new("SELECT 1", Default::default())),
        }
    }

    fn test_bind() -> Op {
        Op::Bind(
            String::new(),
            crate::prepared::Portal {
                statement: String::new(),
                prepared: None,
                formats: Vec::new(),
            },
        )
    }

    fn refused(reply: &[u8], query: bool) -> Expect {
        Expect::Refused {
            reply: reply.to_vec(),
            query,
        }
    }

    fn error(code: &str) -> Vec<u8> {
        let mut out = Vec::new();
        backend::error_response("ERROR", code, "boom", &mut out);
        out
    }

    #[test]
    fn extended_pipeline_results_and_refusal_in_order() {
        let mut t = Tracker::new(b'I');
        let (mut done, mut emit) = (Vec::new(), Vec::new());
        let mut rec = Recorder::new(None);
        t.push(Expect::Parse(test_parse()));
        t.push(Expect::Bind(test_bind()));
        t.push(Expect::Execute(Work::new(1)));
        t.push(Expect::Bind(test_bind()));
        t.push(refused(b"REFUSED", false));
        t.push(Expect::Sync);
        t.on_server(&msg(b'1', b""), &mut done, &mut emit, &mut rec);
        t.on_server(&msg(b'2', b""), &mut done, &mut emit, &mut rec);
        t.on_server(
            &msg(b'D', b"\0\x01\0\0\0\x011"),
            &mut done,
            &mut emit,
            &mut rec,
        );
        t.on_server(&msg(b'C', b"SELECT 1\0"), &mut done, &mut emit, &mut rec);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].command, done[0].rows, done[0].tags[0].as_str()),
            (1, 1, "SELECT 1")
        );
        t.on_server(&msg(b'2', b""), &mut done, &mut emit, &mut rec);
        assert!(
            emit.is_empty(),
            "the refusal waits for its stand-in's error"
        );
        // The stand-in fails; the client gets the refusal instead of that error.
        assert!(t.refusal_due());
        t.on_server(&error("34000"), &mut done, &mut emit, &mut rec);
        assert_eq!(emit, b"REFUSED");
        t.on_server(&msg(b'Z', b"I"), &mut done, &mut emit, &mut rec);
        assert!(t.queue.is_empty());
    }

    #[test]
    fn an_error_skips_the_rest_of_the_pipeline_until_sync() {
        let mut t = Tracker::new(b'I');
        let (mut done, mut emit) = (Vec::new(), Vec::new());
        let mut rec = Recorder::new(None);
        t.push(Expect::Parse(test_parse()));
        t.push(Expect::Bind(test_bind()));
        t.push(Expect::Execute(Work::new(7)));
        t.push(Expect::Sync);
        t.on_server(&error("42601"), &mut done, &mut emit, &mut rec);
        assert_eq!(done.len(), 1);
        assert_eq!(
            done[0].error.as_deref(),
            Some("42601"),
            "the Parse error is the Execute's"
        );
        assert!(!done[0].skipped);
        t.on_server(&msg(b'Z', b"E"), &mut done, &mut emit, &mut rec);
        assert_eq!(t.status, b'E');
        assert!(t.queue.is_empty());
    }

    #[test]
    fn messages_sent_after_an_error_arrived_are_discarded_until_sync() {
        let mut t = Tracker::new(b'I');
        let (mut done, mut emit) = (Vec::new(), Vec::new());
        let mut rec = Recorder::new(None);
        // First half of a pipeline; the error comes back before the rest is sent.
        t.push(Expect::Parse(test_parse()));
        t.push(Expect::Bind(test_bind()));
        t.push(Expect::Execute(Work::new(1)));
        t.on_server(&msg(b'1', b""), &mut done, &mut emit, &mut rec);
        t.on_server(&error("22012"), &mut done, &mut emit, &mut rec);
        assert_eq!(done.len(), 1);
        // The rest of the pipeline: the server discards it and answers only the Sync.
        t.push(Expect::Parse(test_parse()));
        t.push(Expect::Bind(test_bind()));
        t.push(Expect::Execute(Work::new(2)));
        t.push(refused(b"NEVER", false));
        t.push(Expect::Sync);
        let mut orphans = Vec::new();
        t.take_orphans(&mut orphans);
        assert_eq!(orphans.len(), 1);
        assert!(orphans[0].skipped);
        t.on_server(&msg(b'Z', b"I"), &mut done, &mut emit, &mut rec);
        assert!(t.queue.is_empty(), "{:?}", t.queue);
        // And the next statement lines up again.
        t.push(Expect::Query(Work::new(3)));
        t.push(refused(b"AFTER", true));
        t.on_server(&msg(b'C', b"SELECT 1\0"), &mut done, &mut emit, &mut rec);
        t.on_server(&msg(b'Z', b"T"), &mut done, &mut emit, &mut rec);
        assert!(emit.is_empty());
        // A refused simple query: its stand-in's error is replaced, and the server's own
        // ReadyForQuery (a failed transaction block here) ends it.
        t.on_server(&error("42601"), &mut done, &mut emit, &mut rec);
        assert_eq!(emit, b"AFTER");
        t.on_server(&msg(b'Z', b"E"), &mut done, &mut emit, &mut rec);
        assert_eq!(t.status, b'E');
        assert!(t.queue.is_empty(), "{:?}", t.queue);
    }

    #[test]
    fn result_frames_are_recorded_under_their_statement() {
        let mut t = Tracker::new(b'I');
        let (mut done, mut emit) = (Vec::new(), Vec::new());
        let mut rec = Recorder::new(Some(1 << 20));
        let (t1, d1) = (msg(b'T', b"cols"), msg(b'D', b"\0\x01\0\0\0\x011"));
        t.push(Expect::Parse(test_parse()));
        t.push(Expect::Bind(test_bind()));
        t.push(Expect::Describe(None));
        t.push(Expect::Execute(Work::new(4)));
        t.push(Expect::Sync);
        t.push(Expect::Query(Work::new(5)));
        for frame in [msg(b'1', b""), msg(b'2', b""), t1.clone(), d1.clone()] {
            t.on_server(&frame, &mut done, &mut emit, &mut rec);
        }
        t.on_server(&msg(b'C', b"SELECT 1\0"), &mut done, &mut emit, &mut rec);
        t.on_server(&msg(b'Z', b"I"), &mut done, &mut emit, &mut rec);
        let d2 = msg(b'D', b"\0\x01\0\0\0\x012");
        for frame in [
            t1.clone(),
            d2.clone(),
            msg(b'C', b"SELECT 1\0"),
            msg(b'Z', b"I"),
        ] {
            t.on_server(&frame, &mut done, &mut emit, &mut rec);
        }
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].output.len as usize, t1.len() + d1.len());
        assert_eq!(done[1].output.len as usize, t1.len() + d2.len());
        let batch = rec.take().unwrap();
        assert_eq!(batch.bytes, [t1.clone(), d1, t1, d2].concat());
        let owners: Vec<u64> = batch.parts.iter().map(|p| p.command).collect();
        assert_eq!(owners, vec![4, 5]);
    }

    #[test]
    fn simple_query_collects_every_statement_until_ready() {
        let mut t = Tracker::new(b'I');
        let (mut done, mut emit) = (Vec::new(), Vec::new());
        let mut rec = Recorder::new(None);
        t.push(Expect::Query(Work::new(3)));
        t.on_server(&msg(b'C', b"BEGIN\0"), &mut done, &mut emit, &mut rec);
        t.on_server(&msg(b'C', b"INSERT 0 2\0"), &mut done, &mut emit, &mut rec);
        t.on_server(&error("23505"), &mut done, &mut emit, &mut rec);
        assert!(done.is_empty());
        t.on_server(&msg(b'Z', b"E"), &mut done, &mut emit, &mut rec);
        assert_eq!(done[0].tags, vec!["BEGIN", "INSERT 0 2"]);
        assert_eq!(done[0].rows, 2);
        assert_eq!(done[0].error.as_deref(), Some("23505"));
    }
}
