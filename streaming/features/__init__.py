"""Feature logic as pure functions over small state objects: (state, event) -> state, (state, as_of) -> row.

No I/O here. Times are float epoch seconds (event time). A state object belongs to exactly one keyed step of the
dataflow, so the update functions change it in place (for speed); nothing else holds it.

Views (names and types are the contract in feature_repo/features.py):
  customer_session     session window, 30-minute gap
  customer_activity    baskets and spend over (as_of - 7d, as_of] and (as_of - 28d, as_of], last order, preferred store
  customer_repertoire  top 50 products by purchase count decayed with a 90-day half-life, plus the last 10
                       distinct products bought (so a purchase shows up in buy-again at once, even for big baskets)
  store_traffic        baskets and customers over 1 h / 24 h, sales over 24 h (to the minute)
  store_product        units over 7 d / 28 d (to the minute), last sale, on_hand from inventory, in-stock probability

Modules: `event` (the flow's compact event, time constants, when a window changes next), `customer`, `store`
(store_traffic), `store_product`, `small_pairs` (most pairs, in columns), `windows` (running sums, the minute grain),
`top`, `substitution`.
"""
