//! [`VerifySource`]: verify's range bounds and canonical rows (see the module docs of
//! [`adapter`](super) for the canonical form).

use super::Sessions;
use crate::seam::{Direction, Selection, Side};
use crate::EngineError;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::future::Future;

pub trait VerifySource: Sessions {
    /// Upper bounds of verify's key ranges of roughly `range_rows` source rows each, found
    /// without walking the key; empty for one range.
    fn sample_bounds(
        &self,
        conn: &Self::Conn,
        dir: &Direction,
        range_rows: i64,
    ) -> impl Future<Output = Result<Vec<Vec<String>>, EngineError>> + Send;
    /// One side's canonical rows, as the server sends them (a chunk may hold several rows or
    /// part of one).
    fn read_canonical<'a>(
        &'a self,
        conn: &'a Self::Conn,
        dir: &Direction,
        side: Side,
        rows: Selection<'_>,
    ) -> impl Future<Output = Result<BoxStream<'a, Result<Bytes, EngineError>>, EngineError>> + Send;
}
