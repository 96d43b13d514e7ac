"""Storage: what the data folder holds, and clean-up (the page's `du`, `delete`, `check --orphans`)."""

from __future__ import annotations

import datetime

import streamlit as st

from core.errors import TLabError
from core.service import upkeep
from ui.common import plain, plain_rows, store

st.title("Storage")
st.caption("What the data folder holds, by kind, and what takes the most. Delete ended runs or whole groups "
           "to free space; `python -m core du`, `delete` and `check` do the same from a terminal.")
s = store()

done = st.session_state.pop("storage_done", None)
if done:
    st.success(done)

u = upkeep.usage(s)
c1, c2, c3 = st.columns(3)
c1.metric("Data folder", upkeep.human(u["total_bytes"]))
c2.metric("Free on its disk", upkeep.human(u["free_bytes"]))
c3.metric("Runs", s.query("SELECT count(*) AS n FROM runs")[0]["n"])
st.caption(f"`{plain(u['home'])}`, measured in {u['seconds']:.2f} s.")
with st.container(key="storage_kinds"):
    st.table(plain_rows([{"kind": k["kind"], "size": upkeep.human(k["bytes"]), "files": k["files"]}
                         for k in u["kinds"] if k["files"]]))
left, right = st.columns(2)
with left:
    st.subheader("Largest runs")
    with st.container(key="storage_runs"):
        st.table(plain_rows([{"run": r["run_id"], "size": upkeep.human(r["bytes"]), "status": r["status"],
                              "group": r["group_id"] or "", "slimmed": "yes" if r["slimmed"] else ""}
                             for r in u["largest_runs"]]) or [{"run": "(none)"}])
with right:
    st.subheader("Largest cache entries")
    with st.container(key="storage_caches"):
        st.table(plain_rows([{"cache": c["kind"], "size": upkeep.human(c["bytes"]),
                              "last used": datetime.datetime.fromtimestamp(c["last_used"]).strftime("%Y-%m-%d %H:%M")}
                             for c in u["largest_caches"]]) or [{"cache": "(none)"}])
    st.caption("Caches are capped by TLAB_CACHE_MB; the least recently used go first, never one a running job uses.")

st.subheader("Delete runs")
groups = upkeep.groups(s)
if not groups:
    st.info("No runs yet.")
else:
    how = st.radio("Delete", ["a group", "chosen runs"], horizontal=True, key="storage_how")
    if how == "a group":
        by_id = {g["group_id"]: g for g in groups}
        group = st.selectbox("Group", list(by_id), key="storage_group",
                             format_func=lambda g: f"{g} ({by_id[g]['runs']} run(s), {upkeep.human(by_id[g]['bytes'])}"
                                                   f"{', still running' if by_id[g]['busy'] else ''})")
        ask = {"group": group, "run_ids": []}
    else:
        ids = [r["id"] for r in s.query("SELECT id FROM runs ORDER BY created DESC, id")]
        ask = {"group": None, "run_ids": st.multiselect("Runs", ids, key="storage_pick")}
    if st.button("Delete…", key="storage_delete", disabled=not (ask["group"] or ask["run_ids"])):
        st.session_state["storage_ask"] = ask
    pending = st.session_state.get("storage_ask")
    if pending:
        try:
            plan = upkeep.plan_delete(s, pending["run_ids"], pending["group"])
        except TLabError as e:
            st.error(str(e))
            st.session_state.pop("storage_ask", None)
            plan = None
        if plan is not None and plan.blocked:
            st.error("Not deleting anything: " + ", ".join(f"{plain(b['run_id'])} is {b['status']}" for b in plan.blocked)
                     + ". Cancel it (Live page) or wait for it to end.")
            if st.button("OK", key="storage_blocked_ok"):
                st.session_state.pop("storage_ask", None)
                st.rerun()
        elif plan is not None:
            with st.container(key="storage_confirm"):
                st.warning(f"Delete {len(plan.runs)} run(s) and their folders, freeing {upkeep.human(plan.bytes)}? "
                           "This can't be undone (a backup can: `python -m core backup`).")
                st.table(plain_rows([{"run": r["run_id"], "name": r["name"], "status": r["status"],
                                      "size": upkeep.human(r["bytes"])} for r in plan.runs]))
                yes, no = st.columns(2)
                if yes.button(f"Yes, delete {len(plan.runs)} run(s)", key="storage_yes", type="primary"):
                    try:
                        gone, freed = upkeep.delete(s, pending["run_ids"], pending["group"])
                        st.session_state["storage_done"] = f"Deleted {len(gone.runs)} run(s), freed {upkeep.human(freed)}."
                    except TLabError as e:
                        st.session_state["storage_done"] = None
                        st.error(str(e))
                    st.session_state.pop("storage_ask", None)
                    st.rerun()
                if no.button("Cancel", key="storage_no"):
                    st.session_state.pop("storage_ask", None)
                    st.rerun()

st.subheader("Orphans")
found = upkeep.orphans(s)
if not found.folders and not found.rows:
    st.caption("None: every run folder has its run, and every run that trained has its folder.")
else:
    st.table(plain_rows([{"what": "folder with no run", "run": f["run_id"], "size": upkeep.human(f["bytes"])}
                         for f in found.folders]
                        + [{"what": "run whose folder is gone", "run": r["run_id"], "size": "-"} for r in found.rows]))
    if st.button(f"Remove {len(found.folders) + len(found.rows)} orphan(s)", key="storage_orphans"):
        freed = upkeep.remove_orphans(s, found)
        st.session_state["storage_done"] = f"Removed the orphans, freed {upkeep.human(freed)}."
        st.rerun()
