//! PostgreSQL's side of verify: range bounds from a page sample (`TABLESAMPLE SYSTEM`) and
//! canonical rows as COPY text under the session settings of [`super::connect`].

use super::sql::{self, qualified};
use super::Postgres;
use crate::adapter::VerifySource;
use crate::seam::{Direction, Selection, Side};
use crate::EngineError;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio_postgres::Client;

/// The most key ranges a table is split into.
const MAX_RANGES: f64 = 4096.0;

impl VerifySource for Postgres {
    /// Range boundaries from a sample of the source's keys (`TABLESAMPLE SYSTEM`, about 32 pages per
    /// range): ranges of roughly `range_rows` rows each, found without walking the key. The first
    /// range is open below and the last open above, so rows written since are still covered.
    async fn sample_bounds(
        &self,
        db: &Client,
        dir: &Direction,
        range_rows: i64,
    ) -> Result<Vec<Vec<String>>, EngineError> {
        let row = db
            .query_one(&sql::table_size(), &[&qualified(&dir.from)])
            .await
            .map_err(|e| EngineError::db("estimating the table size", e))?;
        let (reltuples, relpages, pages): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
        // Rows now, the planner's way: the density of the last ANALYZE times today's pages, so a
        // table that grew since is not taken for its old size. Never analyzed: 50 rows a page.
        let rows = if reltuples > 0.0 && relpages > 0.0 {
            reltuples / relpages * pages
        } else {
            pages * 50.0
        };
        // Capped: capture's marks place each changed key among the stored bounds, and the
        // state store keeps a row per range.
        let ranges = (rows / range_rows.max(1) as f64).ceil().min(MAX_RANGES);
        if ranges <= 1.0 || pages <= 0.0 {
            return Ok(Vec::new());
        }
        let pages_wanted = (32.0 * ranges).min((4.0 * ranges).max(20_000.0));
        let percent = (100.0 * pages_wanted / pages).clamp(0.000_1, 100.0);
        let k = dir.key.len();
        let buckets = ranges as i32;
        let firsts: Vec<Vec<String>> = db
            .query(&sql::sample_keys(dir), &[&percent, &buckets])
            .await
            .map_err(|e| EngineError::db("sampling the keys to verify", e))?
            .iter()
            .map(|r| (0..k).map(|i| r.try_get::<_, String>(i)).collect())
            .collect::<Result<_, _>>()
            .map_err(|e| EngineError::db("reading the sampled keys as text", e))?;
        let mut bounds: Vec<Vec<String>> = Vec::with_capacity(firsts.len());
        for key in firsts {
            if bounds.last() != Some(&key) {
                bounds.push(key);
            }
        }
        Ok(bounds)
    }

    /// One side's canonical rows: `COPY (SELECT …) TO STDOUT`, one message per row.
    async fn read_canonical<'a>(
        &self,
        db: &'a Client,
        dir: &Direction,
        side: Side,
        rows: Selection<'_>,
    ) -> Result<BoxStream<'a, Result<Bytes, EngineError>>, EngineError> {
        let copy = match rows {
            Selection::Range(range) => sql::verify_range_copy(dir, side, range, false),
            Selection::KeyedRange(range) => sql::verify_range_copy(dir, side, range, true),
            Selection::Keys(keys) => sql::verify_keys_copy(dir, side, keys),
        };
        let stream = db
            .copy_out(&copy)
            .await
            .map_err(|e| EngineError::db("reading rows to verify", e))?;
        Ok(stream
            .map_err(|e| EngineError::db("reading rows to verify", e))
            .boxed())
    }
}
