//! The audit pipeline: records leave the request path through a bounded queue and reach the
//! store in batches, without ever making a request wait on the database or losing a record when
//! the database is down.

mod decision;
mod priority;
mod record;
mod writer;

pub use decision::decision_record;
pub use priority::{WriterPriority, WRITER_THREAD_PREFIX};

pub use record::{
    severity_for_risk, AuditEventRecord, AuditRecord, DecisionRecord, JsonText, LateExplanation,
    PendingExplanation, ViolationRecord, ANONYMOUS_USER, BUILTIN_APPROVAL_POLICY,
    BUILTIN_APPROVAL_POLICY_NAME,
};
pub use writer::{AuditHandle, AuditWriterConfig};
