-- Workers no longer look for the oldest mark: they sweep the fold queue in call order, each
-- claim taking the marks after the call the previous one reached. The index in age order served
-- only that search, and cost every new mark an insert and every settle a delete of each folded
-- call's entry. Those entries lie in the order the calls were marked, which is random against
-- the call order a claim takes them in, so on a long queue (a projector catching up on a log
-- that grew without it) each settled call's delete wrote a page of its own. The lag operators
-- watch, the oldest mark's age, is read with the queue's count, which walks every row already.
DROP INDEX calls_to_fold_by_age;
