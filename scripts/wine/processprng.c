/*
 * Test-only stand-in for bcryptprimitives.dll under Wine 8.0.
 *
 * Rust's standard library (1.78 and later) imports ProcessPrng from
 * bcryptprimitives.dll, which Wine 8.0 does not provide, so a Rust .exe
 * fails to load there (c0000135). This DLL exports ProcessPrng on top of
 * bcrypt's BCryptGenRandom (which Wine implements) and is placed beside the
 * .exe only by scripts/windows-wine.sh. It is never part of the product:
 * Windows 10 and later ship the real bcryptprimitives.dll.
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
