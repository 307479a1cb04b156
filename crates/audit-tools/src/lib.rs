//! Reading the audit log `nanoclaw-audit` writes: proving that no line was edited,
//! dropped, inserted or reordered since (`verify`), back to the last signed checkpoint
//! (`checkpoint`), and answering queries about it. `nanoclaw run` never runs this code.
//!
//! It must never write to the log itself; checkpoints go to their own file beside it.
//!
//! - `read`: reading a consistent prefix without blocking appenders
//! - `verify`: walking the chain
//! - `query`: listing, showing, the table
//! - `checkpoint`: signed checkpoints and their keys
//! - `unfinished`: invocations that started and never ended (runner killed, or running)

mod checkpoint;
mod query;
mod read;
mod unfinished;
mod verify;

pub use checkpoint::{checkpoint, checkpoints_path, generate_key, Checkpoint, PublicKey};
pub use query::{list, show, table, Filter};
pub use unfinished::{unfinished, RunState, Unfinished};
pub use verify::{verify, Problem, VerifyReport};
