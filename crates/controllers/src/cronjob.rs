//! CronJob: creates a Job for each scheduled time (`<cronjob>-<minutes since epoch>`),
//! honouring suspend, startingDeadlineSeconds and concurrencyPolicy (Allow, Forbid,
//! Replace), tracks active Jobs and the last schedule/success times, and keeps
//! successfulJobsHistoryLimit / failedJobsHistoryLimit finished Jobs.
//!
//! `minute` is how long a cron minute lasts (60 s; tests shorten it): schedules run on a
//! clock that advances 60 s per `minute`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use r8s_client::events::Recorder;
use r8s_client::informer::{Informers, ObjKey};
use r8s_client::queue::WorkQueue;
use serde_json::json;

use crate::cron::Schedule;
use crate::util;

pub struct Controller {
    informers: Informers,
    queue: WorkQueue<ObjKey>,
    recorder: Recorder,
    minute: Duration,
}

impl Controller {
    pub async fn start(informers: Informers, minute: Duration) {
        let c = Arc::new(Controller {
            recorder: Recorder::new(informers.client().clone(), "cronjob-controller"),
            informers: informers.clone(),
            queue: WorkQueue::new(),
            minute,
        });
        let cjs = informers.get::<CronJob>();
        let jobs = informers.get::<Job>();
        util::queue_self(&cjs, &c.queue);
        util::queue_controller(&jobs, &c.queue, "CronJob");
        cjs.synced().await;
        jobs.synced().await;
        util::run_over("cronjob", &cjs, &c.queue, 2, c.clone(), |c, key| async move { c.sync(key).await });
    }

    /// Real time -> schedule clock (60 s per `minute`), and back.
    fn to_sched(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let ms = t.timestamp_millis() as i128 * 60_000 / self.minute.as_millis().max(1) as i128;
        Utc.timestamp_millis_opt(ms as i64).single().unwrap_or(t)
    }

    fn to_real(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let ms = t.timestamp_millis() as i128 * self.minute.as_millis().max(1) as i128 / 60_000;
        Utc.timestamp_millis_opt(ms as i64).single().unwrap_or(t)
    }

    async fn sync(&self, (ns, name): ObjKey) -> anyhow::Result<Option<Duration>> {
        let Some(cj) = self.informers.get::<CronJob>().get(&ns, &name) else {
            return Ok(None);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let client = self.informers.client().clone();
        let japi: Api<Job> = Api::namespaced(client.clone(), &ns);
        let uid = cj.uid().unwrap_or_default();
        let mut mine: Vec<Arc<Job>> =
            self.informers.get::<Job>().list_ns(&ns).into_iter().filter(|j| util::controller_ref(j.as_ref()).is_some_and(|r| r.uid == uid)).collect();
        mine.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()));
        let active: Vec<&Arc<Job>> = mine.iter().filter(|j| crate::job::finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).collect();
        let mut status = serde_json::to_value(&cj.status)?;
        if status.is_null() {
            status = json!({});
        }
        // Jobs the last status listed as active that have finished: reported once, as upstream.
        let was_active: Vec<String> = cj.status.as_ref().and_then(|s| s.active.as_ref()).into_iter().flatten().filter_map(|r| r.name.clone()).collect();
        for j in &mine {
            if let Some(cond) = crate::job::finished(j).filter(|_| was_active.contains(&j.name_any())) {
                self.recorder.normal(cj.as_ref(), "SawCompletedJob", format!("Saw completed job: {}, condition: {cond}", j.name_any()));
            }
        }
        // Finished jobs: record success and report them once.
        let last_success =
            mine.iter().filter(|j| crate::job::finished(j) == Some("Complete")).filter_map(|j| j.status.as_ref()?.completion_time.clone()).max_by_key(|t| t.0);
        if let Some(t) = &last_success {
            status["lastSuccessfulTime"] = json!(t);
        }
        // History limits.
        for (kind, limit) in [("Complete", spec.successful_jobs_history_limit.unwrap_or(3)), ("Failed", spec.failed_jobs_history_limit.unwrap_or(1))] {
            let done: Vec<&Arc<Job>> = mine.iter().filter(|j| crate::job::finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none()).collect();
            for j in done.iter().take(done.len().saturating_sub(limit.max(0) as usize)) {
                match japi.delete(&j.name_any(), &DeleteParams::background()).await {
                    Ok(_) => self.recorder.normal(cj.as_ref(), "SuccessfulDelete", format!("Deleted job {}", j.name_any())),
                    Err(e) if r8s_client::is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.recorder.warning(cj.as_ref(), "UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule));
                return Ok(None);
            }
        };
        // spec.timeZone: schedules are read on that zone's wall clock (UTC when unset).
        let zone = match spec.time_zone.as_deref() {
            None => None,
            Some(tz) => match jiff::tz::TimeZone::get(tz) {
                Ok(z) => Some(z),
                Err(e) => {
                    self.recorder.warning(cj.as_ref(), "UnknownTimeZone", format!("invalid timeZone: {tz:?}: {e}"));
                    return Ok(None);
                }
            },
        };
        let wall = |t: DateTime<Utc>| to_wall(zone.as_ref(), t);
        let instant = |t: DateTime<Utc>| from_wall(zone.as_ref(), t);
        let now = Utc::now();
        let now_s = self.to_sched(now);
        let since_real = cj
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| t.0.as_millisecond())
            .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond()))
            .unwrap_or(now.timestamp_millis());
        let since_s = self.to_sched(Utc.timestamp_millis_opt(since_real).single().unwrap_or(now));
        let mut active_refs: Vec<serde_json::Value> =
            active.iter().map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j.name_any(), "namespace": ns, "uid": j.uid(), "resourceVersion": j.resource_version()})).collect();
        if spec.suspend != Some(true)
            && let Some(t) = schedule.last_between(wall(since_s), wall(now_s)).map(instant)
        {
            let real_t = self.to_real(t);
            let too_late = spec.starting_deadline_seconds.is_some_and(|d| (now - real_t).num_seconds() > d);
            let job_name = format!("{name}-{}", t.timestamp() / 60);
            let exists = mine.iter().any(|j| j.name_any() == job_name);
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if !too_late && !exists {
                if policy == "Forbid" && !active.is_empty() {
                    // Skipped: upstream leaves lastScheduleTime for the next chance.
                } else {
                    if policy == "Replace" {
                        for j in &active {
                            let _ = japi.delete(&j.name_any(), &DeleteParams::background()).await;
                            self.recorder.normal(cj.as_ref(), "SuccessfulDelete", format!("Deleted job {}", j.name_any()));
                        }
                        active_refs.clear();
                    }
                    let tmpl = spec.job_template.clone();
                    let md = tmpl.metadata.clone().unwrap_or_default();
                    let mut annotations = md.annotations.unwrap_or_default();
                    annotations.insert("batch.kubernetes.io/cronjob-scheduled-timestamp".into(), real_t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    let job = Job {
                        metadata: kube::api::ObjectMeta {
                            name: Some(job_name.clone()),
                            namespace: Some(ns.clone()),
                            labels: md.labels,
                            annotations: Some(annotations),
                            owner_references: Some(vec![util::owner_ref(cj.as_ref())]),
                            ..Default::default()
                        },
                        spec: tmpl.spec,
                        status: None,
                    };
                    match japi.create(&PostParams::default(), &job).await {
                        Ok(created) => {
                            self.recorder.normal(cj.as_ref(), "SuccessfulCreate", format!("Created job {job_name}"));
                            active_refs
                                    .push(json!({"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "namespace": ns, "uid": created.uid(), "resourceVersion": created.resource_version()}));
                        }
                        Err(e) if r8s_client::is_conflict(&e) => {}
                        Err(e) => {
                            self.recorder.warning(cj.as_ref(), "FailedCreate", format!("Error creating job: {}", util::api_message(&e)));
                            return Err(e.into());
                        }
                    }
                }
            }
            status["lastScheduleTime"] = json!(real_t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        status["active"] = if active_refs.is_empty() { serde_json::Value::Null } else { json!(active_refs) };
        let cur = serde_json::to_value(&cj.status)?;
        if ["active", "lastScheduleTime", "lastSuccessfulTime"].iter().any(|f| util::norm(cur.get(*f), false) != util::norm(status.get(*f), false)) {
            let capi: Api<CronJob> = Api::namespaced(client, &ns);
            match capi.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(e) if r8s_client::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Wake up for the next scheduled time.
        let next = schedule.next_after(wall(now_s)).map(|t| self.to_real(instant(t)));
        Ok(next.map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::from_millis(100)) + Duration::from_millis(50)))
    }
}

/// An instant as the wall-clock time of `zone`, written as if it were UTC (the schedule
/// matcher works on wall-clock fields).
fn to_wall(zone: Option<&jiff::tz::TimeZone>, t: DateTime<Utc>) -> DateTime<Utc> {
    let Some(z) = zone else { return t };
    let Ok(ts) = jiff::Timestamp::from_millisecond(t.timestamp_millis()) else {
        return t;
    };
    let civil = ts.to_zoned(z.clone()).datetime();
    let naive = chrono::NaiveDate::from_ymd_opt(civil.year() as i32, civil.month() as u32, civil.day() as u32)
        .and_then(|d| d.and_hms_opt(civil.hour() as u32, civil.minute() as u32, civil.second() as u32));
    naive.map(|n| Utc.from_utc_datetime(&n)).unwrap_or(t)
}

/// The inverse of `to_wall` (ambiguous or skipped wall times resolve as upstream's Go time does:
/// to the earlier instant).
fn from_wall(zone: Option<&jiff::tz::TimeZone>, t: DateTime<Utc>) -> DateTime<Utc> {
    let Some(z) = zone else { return t };
    use chrono::{Datelike, Timelike};
    let civil = jiff::civil::DateTime::new(t.year() as i16, t.month() as i8, t.day() as i8, t.hour() as i8, t.minute() as i8, t.second() as i8, 0);
    let Ok(civil) = civil else { return t };
    match z.to_ambiguous_zoned(civil).compatible() {
        Ok(zoned) => Utc.timestamp_millis_opt(zoned.timestamp().as_millisecond()).single().unwrap_or(t),
        Err(_) => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_round_trip_in_a_zone() {
        let z = jiff::tz::TimeZone::get("Asia/Shanghai").expect("the system time zone database (tzdata)");
        let t = Utc.with_ymd_and_hms(2026, 11, 29, 16, 30, 0).unwrap();
        let w = to_wall(Some(&z), t);
        assert_eq!(w, Utc.with_ymd_and_hms(2026, 11, 30, 0, 30, 0).unwrap(), "UTC+8");
        assert_eq!(from_wall(Some(&z), w), t);
        // "0 0 * * *" in Shanghai is 16:00 UTC.
        let sched = crate::cron::Schedule::parse("0 0 * * *").unwrap();
        let next = sched.next_after(w).map(|x| from_wall(Some(&z), x)).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0).unwrap());
    }
}
