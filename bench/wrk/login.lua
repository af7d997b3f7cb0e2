-- POST /auth/login with the bench user's (correct) password: every request
-- is one argon2id verification and one new session.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}', os.getenv("LOGIN_EMAIL"), os.getenv("LOGIN_PASSWORD"))
dofile(os.getenv("BENCH_DIR") .. "/wrk/summary.lua")
