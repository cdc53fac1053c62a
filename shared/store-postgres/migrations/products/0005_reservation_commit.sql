-- A reservation can be committed: the order shipped, its units left `reserved` for good.
alter table reservations drop constraint reservations_state_check;
alter table reservations add constraint reservations_state_check
    check (state in ('held', 'released', 'committed'));
